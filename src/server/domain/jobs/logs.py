"""Job logs: the records a job's worker appends with its job token (capped per job, a
final `truncated` record at the cap), and the pages users read."""

from __future__ import annotations

import builtins  # JobReads.list shadows the builtin in JobService
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.jobs.attempts import JobAttempts
from geopera_kernel.server.domain.jobs.notices import LOGS_CHANNEL
from geopera_kernel.server.errors import invalid_argument
from geopera_kernel.server.pagination import decode_page_token, encode_page_token, page_size_or_default
from geopera_kernel.server.store import Q

LEVEL_DEBUG, LEVEL_INFO, LEVEL_WARNING, LEVEL_ERROR, LEVEL_CRITICAL = 1, 2, 3, 4, 5
MAX_RECORDS_PER_CALL = 500
MAX_MESSAGE_CHARS = 4096
MAX_FIELDS_BYTES = 4096
_DROPPED = '{"fields_dropped":true}'


@dataclass(frozen=True)
class LogRecordIn:
    """A record as the worker sends it."""

    log_time: datetime | None
    level: int
    message: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class JobLogEntry:
    sequence: int
    attempt: int
    log_time: datetime
    level: int
    message: str
    fields: dict[str, Any]
    truncated: bool

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobLogEntry:
        return cls(
            row["sequence"], row["attempt"], row["log_time"], row["level"], row["message"], row["fields"],
            row["truncated"],
        )  # fmt: skip


@dataclass(frozen=True)
class JobLogCaps:
    max_entries: int = 10_000
    max_bytes: int = 4 << 20


def check_level(level: int, field: str) -> int:
    if not 0 <= level <= LEVEL_CRITICAL:
        raise invalid_argument("INVALID_LOG_LEVEL", f"{field} must be a LogLevel (0..5)", field=field)
    return level


def _bounded(record: LogRecordIn) -> tuple[int, str, str]:
    """(level, message, fields JSON) as stored: message cut (NULs, which PostgreSQL text
    cannot hold, removed); fields that are too large or not JSON PostgreSQL takes (NaN,
    NUL characters) dropped."""
    level = record.level if 1 <= record.level <= LEVEL_CRITICAL else LEVEL_INFO
    message = record.message.replace("\x00", "")[:MAX_MESSAGE_CHARS]
    try:
        fields = json.dumps(record.fields, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        fields = _DROPPED
    if len(fields.encode()) > MAX_FIELDS_BYTES or "\\u0000" in fields:
        fields = _DROPPED
    return level, message, fields


class JobLogs(JobAttempts):
    log_caps: JobLogCaps = JobLogCaps()

    async def write_logs(
        self, principal: Principal, job_id: str, records: builtins.list[LogRecordIn]
    ) -> tuple[int, int]:
        """Append `records` for the token's live attempt: (stored, dropped at the cap)."""
        if len(records) > MAX_RECORDS_PER_CALL:
            raise invalid_argument(
                "TOO_MANY_LOG_ENTRIES", f"at most {MAX_RECORDS_PER_CALL} records per call", field="records"
            )
        caps = self.log_caps
        async with self._db.transaction() as tx:
            job = await self._current_attempt(tx, principal, job_id)  # also serialises the job's appends
            row = await (await tx.execute(Q.get_job_log_totals, {"job_id": job_id})).fetchone()
            entries, size, truncated, dropped = (
                (row["entries"], row["size_bytes"], row["truncated"], row["dropped_entries"])
                if row
                else (0, 0, False, 0)
            )
            now = datetime.now(UTC)
            rows: builtins.list[tuple[int, datetime, int, str, str, bool]] = []
            for record in records:
                if truncated:
                    dropped += 1
                    continue
                level, message, fields = _bounded(record)
                record_bytes = len(message.encode()) + len(fields.encode())
                # One slot is kept for the truncation record.
                if entries + 1 >= caps.max_entries or size + record_bytes > caps.max_bytes:
                    truncated, dropped = True, dropped + 1
                    note = (
                        f"log cap reached ({caps.max_entries} records or {caps.max_bytes} bytes per job): "
                        "later records of this job are dropped"
                    )
                    caps_fields = json.dumps({"max_entries": caps.max_entries, "max_bytes": caps.max_bytes})
                    entries += 1
                    rows.append((entries, now, LEVEL_WARNING, note, caps_fields, True))
                    continue
                entries, size = entries + 1, size + record_bytes
                rows.append((entries, record.log_time or now, level, message, fields, False))
            if rows:
                columns = list(zip(*rows, strict=True))
                await tx.execute(
                    Q.insert_job_logs,
                    {
                        "job_id": job_id, "attempt": job.attempt, "sequences": list(columns[0]),
                        "log_times": list(columns[1]), "levels": list(columns[2]), "messages": list(columns[3]),
                        "fields": list(columns[4]), "truncated": list(columns[5]),
                    },
                )  # fmt: skip
                await tx.execute(Q.notify, {"channel": LOGS_CHANNEL, "payload": job_id})
            await tx.execute(
                Q.upsert_job_log_totals,
                {"job_id": job_id, "entries": entries, "size_bytes": size, "truncated": truncated,
                 "dropped_entries": dropped},
            )  # fmt: skip
        stored = sum(1 for r in rows if not r[5])
        return stored, len(records) - stored

    async def logs(
        self, principal: Principal, job_id: str, min_level: int, page_size: int, page_token: str
    ) -> tuple[builtins.list[JobLogEntry], str]:
        """A page of the job's records (the caller must see the job, as processing.jobs.get)."""
        check_level(min_level, "min_level")
        limit = page_size_or_default(page_size)
        await self._read_job(principal, job_id)
        filters = {"op": "processing.jobs.logs", "job_id": job_id, "min_level": min_level}
        cursor = decode_page_token(page_token, filters)
        after = int(cursor["sequence"]) if cursor else 0
        entries = await self.logs_after(job_id, after, min_level, limit + 1)
        if len(entries) > limit:
            entries = entries[:limit]
            return entries, encode_page_token({"sequence": entries[-1].sequence}, filters)
        return entries, ""

    async def logs_after(self, job_id: str, after: int, min_level: int, limit: int) -> builtins.list[JobLogEntry]:
        async with self._db.connection() as conn:
            rows = await (
                await conn.execute(
                    Q.list_job_logs, {"job_id": job_id, "after_sequence": after, "min_level": min_level, "limit": limit}
                )
            ).fetchall()
        return [JobLogEntry.from_row(r) for r in rows]
