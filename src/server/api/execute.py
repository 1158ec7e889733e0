"""Running an operation, shared by every projection (gRPC Execute, REST, MCP):
registry lookup, idempotent spends, and the job event stream. The operation's
scope is checked by the caller, after authenticating, before `run`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from geopera_kernel.server.api import convert
from geopera_kernel.server.api.registry import Operation, OperationContext, OperationRegistry
from geopera_kernel.server.api.wire import EncodedResult
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain import idempotency
from geopera_kernel.server.domain.idempotency import KeyedCall, Replayed
from geopera_kernel.server.domain.jobs import JobEvent, JobLogEvent, job_events
from geopera_kernel.server.domain.jobs.watch import LogFollow
from geopera_kernel.server.domain.jobs.watch_set import JobSet, set_events
from geopera_kernel.server.edge.call import CallInfo
from geopera_kernel.server.errors import invalid_argument
from geopera_kernel.server.services import Services

IDEMPOTENCY_KEY_MAX = 255


def reject_nul_characters(message: Message, prefix: str = "params", encoded: bytes | None = None) -> None:
    """PostgreSQL text cannot hold NUL, and no name, id or JSON string needs
    one: refuse it by field instead of failing deep in the store. A NUL in any
    string (a map key, a Struct's text) is a zero byte in the message's wire
    form, so a wire form (`encoded`, else serialized here) without one is
    clean and not walked: most requests, and items.get's every time."""
    if b"\x00" not in (message.SerializeToString() if encoded is None else encoded):
        return
    _reject_nul_fields(message, prefix)


def _reject_nul_fields(message: Message, prefix: str) -> None:
    for field, value in message.ListFields():
        path = f"{prefix}.{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if field.is_repeated else [value]
            for index, text in enumerate(values):
                if "\x00" in text:
                    where = f"{path}[{index}]" if field.is_repeated else path
                    raise invalid_argument("INVALID_CHARACTER", "text must not contain NUL characters", field=where)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:  # (always set)
            if field.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    if "\x00" in str(key):
                        raise invalid_argument("INVALID_CHARACTER", "keys must not contain NUL characters", field=path)
                    if isinstance(item, Message):
                        _reject_nul_fields(item, f"{path}[{key}]")
            elif field.is_repeated:
                for index, item in enumerate(value):
                    _reject_nul_fields(item, f"{path}[{index}]")
            elif field.message_type.full_name == "google.protobuf.Struct":
                reject_nul_json(convert.struct_to_dict(value), path)
            else:
                _reject_nul_fields(value, path)


def reject_nul_json(value: object, path: str = "") -> None:
    """Refuses a NUL in any string or key of parsed JSON (`path`: where it sits)."""
    if isinstance(value, str) and "\x00" in value:
        raise invalid_argument("INVALID_CHARACTER", "text must not contain NUL characters", field=path)
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise invalid_argument("INVALID_CHARACTER", "keys must not contain NUL characters", field=path)
            reject_nul_json(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            reject_nul_json(item, f"{path}[{index}]")


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not (1 <= len(key) <= IDEMPOTENCY_KEY_MAX) or not all(33 <= ord(c) <= 126 for c in key):
        raise invalid_argument(
            "INVALID_IDEMPOTENCY_KEY",
            f"idempotency-key must be 1-{IDEMPOTENCY_KEY_MAX} printable ASCII characters without spaces",
            field="idempotency-key",
        )
    return key


@dataclass
class Executor:
    registry: OperationRegistry
    services: Services

    def resolve(self, name: str) -> Operation:
        if not name:
            raise invalid_argument("OPERATION_REQUIRED", "operation is required", field="operation")
        operation = self.registry.get(name)
        if operation is None:
            raise invalid_argument(
                "UNKNOWN_OPERATION",
                f"unknown operation {name[:100]!r}",
                field="operation",
                metadata={"known_operations": ", ".join(self.registry.names())},
            )
        return operation

    async def run(
        self,
        operation: Operation,
        principal: Principal,
        params: Message,
        key: str | None,
        call: CallInfo,
        *,
        validate_only: bool = False,
        encoded: bytes | None = None,
    ) -> Message | EncodedResult:
        """Run an already resolved and authorised operation. Operations that
        honour an idempotency key (spends, analytics.execute) run once per key
        and project: the key, the side effect and the response commit in one
        transaction (see domain.idempotency). With `validate_only` (AIP-163)
        the handler validates without acting, and a key is checked for form
        only: nothing is recorded under it, nothing replayed. `encoded`: the
        wire form `params` was parsed from, when the projection has it."""
        reject_nul_characters(params, encoded=encoded)
        key = check_idempotency_key(key) if operation.idempotency_key else None
        if validate_only:
            if not operation.supports_validate_only:
                raise invalid_argument(
                    "VALIDATE_ONLY_UNSUPPORTED",
                    f"operation {operation.name} cannot be validated without acting; call it without validate_only",
                    field="validate_only",
                )
            call.extra["validate_only"] = True
            context = OperationContext(principal, call.request_id, None, validate_only=True)
            return await operation.handler(self.services, context, params)
        if key is not None and not operation.claims_key:
            project_id = await operation.key_project(self.services, principal, params) if operation.key_project else ""
            if not project_id:
                key = None  # without a project a spend's handler refuses the params itself
            else:
                # Checked before a stored response can be replayed to a non-member.
                principal.require_project(project_id)
        if key is None:
            return await operation.handler(self.services, OperationContext(principal, call.request_id, None), params)
        print_ = idempotency.fingerprint(operation.name, params.SerializeToString(deterministic=True))
        keyed = KeyedCall(
            self.services.db, principal, key, operation.name, print_, self.services.idempotency_key_ttl_seconds
        )
        try:
            # The handler's service claims the key in the transaction of its side effect.
            return await operation.handler(
                self.services, OperationContext(principal, call.request_id, key, keyed=keyed), params
            )
        except Replayed as replayed:
            call.extra["idempotent_replay"] = True
            return EncodedResult(operation.result_type, replayed.response)

    def watch_set(self, principal: Principal, target: JobSet) -> AsyncIterator[JobEvent]:
        """The events of a set of jobs (see domain.jobs.watch_set)."""
        services = self.services
        return set_events(
            services.jobs, services.notifications, principal, target,
            idle_limit=services.streams.watch_idle_seconds,
        )  # fmt: skip

    def watch(
        self, principal: Principal, job_id: str, after_sequence: int, logs: LogFollow | None = None
    ) -> AsyncIterator[JobEvent | JobLogEvent]:
        """A job's events, and its log records when `logs` asks (see domain.jobs.watch)."""
        services = self.services
        return job_events(
            services.jobs, services.notifications, principal, job_id, after_sequence,
            idle_limit=services.streams.watch_idle_seconds, logs=logs,
        )  # fmt: skip
