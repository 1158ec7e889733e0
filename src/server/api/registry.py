"""The operation registry: the single source of truth for what `Execute` can
run. Each entry fixes the operation's name, params and result messages, the
scope it needs, its side effect, and its handler. REST, reflection-driven docs
and SDK helpers are projections of this table.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from google.protobuf.message import Message

from server.api.wire import EncodedResult
from server.auth import Principal

if TYPE_CHECKING:
    from server.services import Services

SideEffect = Literal["read", "write", "spend"]
# A handler unpacks nothing itself: it receives the services, the call context
# and the already-decoded params message, and returns the result message (or
# its encoding, when it has that at hand: see wire.EncodedResult).
Handler = Callable[["Services", "OperationContext", Any], Awaitable[Message | EncodedResult]]
# The project a spend is for, from its params: idempotency keys are scoped per
# project (as Stripe scopes them per account), so a retry from any token of the
# project replays the first response. "" when the params name none (the
# handler then refuses them).
SpendProject = Callable[["Services", Principal, Any], Awaitable[str]]


@dataclass(frozen=True)
class OperationContext:
    """What a handler gets besides its params."""

    principal: Principal
    request_id: str
    idempotency_key: str | None
    # The transaction of an idempotent spend: the handler's writes join it so
    # the key and the side effect commit together.
    conn: psycopg.AsyncConnection[Any] | None = None


@dataclass(frozen=True)
class Operation:
    name: str
    params_type: type[Message]
    result_type: type[Message]
    scope: str
    side_effect: SideEffect
    handler: Handler
    description: str
    # Spends only (required for them).
    spend_project: SpendProject | None = None

    @property
    def params_type_url(self) -> str:
        return "type.googleapis.com/" + self.params_type.DESCRIPTOR.full_name


def message_base_name(operation: str) -> str:
    """`clip.create_from_item` -> `ClipCreateFromItem` (the contract's naming rule)."""
    return "".join(part.capitalize() for part in re.split(r"[._]", operation))


class OperationRegistry:
    def __init__(self) -> None:
        self._operations: dict[str, Operation] = {}

    def register(self, operation: Operation) -> None:
        if operation.name in self._operations:
            raise ValueError(f"operation {operation.name!r} is already registered")
        base = message_base_name(operation.name)
        expected = (base + "Params", base + "Result")
        actual = (operation.params_type.DESCRIPTOR.name, operation.result_type.DESCRIPTOR.name)
        if actual != expected:
            raise ValueError(f"{operation.name}: messages must be {expected}, got {actual}")
        if operation.side_effect == "spend" and operation.spend_project is None:
            raise ValueError(f"{operation.name}: a spend must say which project its idempotency keys belong to")
        self._operations[operation.name] = operation

    def get(self, name: str) -> Operation | None:
        return self._operations.get(name)

    def names(self) -> list[str]:
        return sorted(self._operations)

    def __iter__(self) -> Iterator[Operation]:
        return iter(sorted(self._operations.values(), key=lambda op: op.name))

    def __len__(self) -> int:
        return len(self._operations)
