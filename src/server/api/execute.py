"""Running an operation, shared by every projection (gRPC Execute, REST, MCP):
registry lookup, idempotent spends, and the job event stream. The operation's
scope is checked by the caller, after authenticating, before `run`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from server.api import convert
from server.api.calls import CallInfo
from server.api.registry import Operation, OperationContext, OperationRegistry
from server.api.wire import EncodedResult, result_bytes
from server.auth import Principal
from server.domain import idempotency
from server.domain.jobs import JobEvent, JobRecord
from server.errors import Code, DomainError, invalid_argument
from server.services import Services
from server.store import CommitProbe

IDEMPOTENCY_KEY_MAX = 255
WATCH_POLL_SECONDS = 5.0


def reject_nul_characters(message: Message, prefix: str = "params") -> None:
    """PostgreSQL text cannot hold NUL, and no name, id or JSON string needs
    one: refuse it by field instead of failing deep in the store."""
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
                        reject_nul_characters(item, f"{path}[{key}]")
            elif field.is_repeated:
                for index, item in enumerate(value):
                    reject_nul_characters(item, f"{path}[{index}]")
            elif field.message_type.full_name == "google.protobuf.Struct":
                _reject_nul_json(convert.struct_to_dict(value), path)
            else:
                reject_nul_characters(value, path)


def _reject_nul_json(value: object, path: str) -> None:
    if isinstance(value, str) and "\x00" in value:
        raise invalid_argument("INVALID_CHARACTER", "text must not contain NUL characters", field=path)
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise invalid_argument("INVALID_CHARACTER", "keys must not contain NUL characters", field=path)
            _reject_nul_json(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_nul_json(item, f"{path}[{index}]")


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


class Replayed(Exception):
    """The call's key already holds a response: answer it instead."""

    def __init__(self, response: bytes) -> None:
        super().__init__("idempotent replay")
        self.response = response


@dataclass
class KeyedCall:
    """An idempotent call whose handler claims the key itself, in the
    transaction that stores its effect, once it knows the project (the items'
    for analytics.execute). Its slow work before that holds no connection."""

    services: Services
    principal: Principal
    key: str
    operation: str
    fingerprint: bytes
    project_id: str = ""

    async def check(self, project_id: str) -> None:
        """Raises Replayed when a finished call already answered this key."""
        self.principal.require_project(project_id)  # before a stored response can be replayed
        async with self.services.db.transaction() as conn:
            replay = await idempotency.peek(conn, project_id, self.key, self.operation, self.fingerprint)
        if replay is not None:
            raise Replayed(replay)

    @contextlib.asynccontextmanager
    async def transaction(
        self, project_id: str, probe: CommitProbe | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The key's transaction: raises Replayed when a concurrent duplicate
        committed first (waiting for it if it is committing)."""
        self.principal.require_project(project_id)
        async with self.services.db.transaction(probe) as conn:
            replay = await idempotency.claim(
                conn, project_id, self.principal.id, self.key, self.operation, self.fingerprint,
                ttl_seconds=self.services.idempotency_key_ttl_seconds,
            )  # fmt: skip
            if replay is not None:
                raise Replayed(replay)
            self.project_id = project_id
            yield conn

    async def record(self, conn: psycopg.AsyncConnection[Any], result: Message) -> None:
        await idempotency.record(conn, self.project_id, self.key, result.SerializeToString())


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
        self, operation: Operation, principal: Principal, params: Message, key: str | None, call: CallInfo
    ) -> Message | EncodedResult:
        """Run an already resolved and authorised operation. Operations that
        honour an idempotency key (spends, analytics.execute) run once per key
        and project: the key, the side effect and the response commit in one
        transaction (see domain.idempotency)."""
        reject_nul_characters(params)
        key = check_idempotency_key(key) if operation.idempotency_key else None
        if key is not None and operation.claims_key:
            print_ = idempotency.fingerprint(operation.name, params.SerializeToString(deterministic=True))
            keyed = KeyedCall(self.services, principal, key, operation.name, print_)
            try:
                return await operation.handler(
                    self.services, OperationContext(principal, call.request_id, key, keyed=keyed), params
                )
            except Replayed as replayed:
                call.extra["idempotent_replay"] = True
                return EncodedResult(operation.result_type, replayed.response)
        project_id = ""
        if key is not None and operation.key_project is not None:
            project_id = await operation.key_project(self.services, principal, params)
        if key is None or not project_id:
            # Without a project a spend's handler refuses the params itself.
            return await operation.handler(self.services, OperationContext(principal, call.request_id, None), params)
        # Checked before a stored response can be replayed to a non-member.
        principal.require_project(project_id)
        print_ = idempotency.fingerprint(operation.name, params.SerializeToString(deterministic=True))
        async with self.services.db.transaction() as conn:
            replay = await idempotency.claim(
                conn, project_id, principal.id, key, operation.name, print_,
                ttl_seconds=self.services.idempotency_key_ttl_seconds,
            )  # fmt: skip
            if replay is not None:
                call.extra["idempotent_replay"] = True
                return EncodedResult(operation.result_type, replay)
            result = await operation.handler(
                self.services, OperationContext(principal, call.request_id, key, conn), params
            )
            await idempotency.record(conn, project_id, key, result_bytes(result))
            return result

    async def watch(self, principal: Principal, job_id: str, after_sequence: int) -> AsyncIterator[JobEvent]:
        """A job's events: the snapshot (unless resuming), then every change in
        order, ending after the terminal one."""
        principal.require_scope("processing:read")
        if after_sequence < 0:
            raise invalid_argument("INVALID_SEQUENCE", "after_sequence must be >= 0", field="after_sequence")
        jobs = self.services.jobs
        notifications = self.services.notifications
        with notifications.watch_job(job_id) as watch:
            # Subscribed before reading, so no change can slip between the two.
            job = await jobs.get(principal, job_id)
            if after_sequence == 0:
                yield JobEvent(job.sequence, "snapshot", job.update_time, job)
                if job.terminal:
                    return
                last = job.sequence
            elif after_sequence >= job.sequence and job.terminal:
                return  # the client has every event already: nothing newer will come
            else:
                last = after_sequence  # never send an event the client has (or said it has)
            # Events come from the announcements themselves; the table is read
            # only to catch up: after a resume, on a gap, or when an
            # announcement was too large to carry its snapshot.
            catch_up = last < job.sequence
            idle_limit = self.services.streams.watch_idle_seconds
            last_news = time.monotonic()
            while True:
                if catch_up:
                    catch_up = False
                    for event in await jobs.events_after(job_id, last):
                        yield event
                        last = event.sequence
                        last_news = time.monotonic()
                        if event.job.terminal:
                            return
                for note in sorted(watch.take(), key=lambda n: n["s"]):
                    if note["s"] <= last:
                        continue
                    if note["s"] != last + 1 or "snap" not in note:
                        catch_up = True
                        break
                    # Snapshots leave out input_params (they never change): the job's are used.
                    snapshot = {**note["snap"], "input_params": job.input_params}
                    event = JobEvent(
                        note["s"], note["e"], datetime.fromisoformat(note["at"]), JobRecord.from_json(snapshot)
                    )
                    yield event
                    last = event.sequence
                    last_news = time.monotonic()
                    if event.job.terminal:
                        return
                if catch_up or watch.pending:
                    continue
                if notifications.closing.is_set():
                    raise DomainError(
                        Code.UNAVAILABLE,
                        "SERVER_SHUTTING_DOWN",
                        f"the server is stopping; resume the watch with after_sequence={last}",
                        metadata={"after_sequence": str(last)},
                    )
                idle = time.monotonic() - last_news
                if idle >= idle_limit:
                    raise DomainError(
                        Code.UNAVAILABLE,
                        "WATCH_IDLE",
                        f"job {job_id} had no event for {idle_limit:g} s; resume the watch with after_sequence={last}",
                        metadata={"after_sequence": str(last)},
                    )
                try:
                    await asyncio.wait_for(watch.wake.wait(), timeout=min(WATCH_POLL_SECONDS, idle_limit - idle))
                except TimeoutError:
                    catch_up = True  # a safety net for a lost announcement
                if not watch.pending:
                    catch_up = True  # woken without news: the listener reconnected
