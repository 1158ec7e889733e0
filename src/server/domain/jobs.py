"""Processing jobs: job types, credits, the lifecycle, worker claims and leases,
job tokens, output registration with provenance, and job events.

Every state change of a job bumps its `sequence`, writes a `job_events` row
with the new snapshot, and NOTIFYs `geopera_job_events` - all in the same
transaction, so watchers on any replica see every change exactly once and in
order, and a rolled-back change is never announced.
"""

from __future__ import annotations

import asyncio
import builtins  # JobService.list shadows the builtin in the annotations after it
import json
import logging
import math
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jsonschema
import psycopg
import shapely
from psycopg.types.json import Jsonb
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from raster.cost import CostModel
from raster.geo import Aoi, geodesic_area_km2, parse_aoi
from server.auth import JOB_TOKEN_PREFIX, Principal, hash_token
from server.domain import idempotency
from server.domain.catalog import COLLECTION_ID
from server.domain.models import ItemRecord
from server.errors import (
    Code,
    DomainError,
    ExpectedSchema,
    FieldViolation,
    already_exists,
    failed_precondition,
    invalid_argument,
    not_found,
    permission_denied,
)
from server.ids import new_id
from server.pagination import decode_page_token, encode_page_token, page_size_or_default
from server.store import CommitProbe, Database, Q
from server.store.listener import CANCEL_CHANNEL, DISPATCH_CHANNEL
from server.validation import require_finite_json

log = logging.getLogger(__name__)

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
ACTIVE = frozenset({"DISPATCHED", "RUNNING"})
STATUSES = ("PENDING", "DISPATCHED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
JOB_TYPE_CACHE_SECONDS = 2.0
JOB_TYPE_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
WORKER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_WORKER_NAME_CHARS = 200
MAX_INPUT_PARAMS_BYTES = 64 << 10


@dataclass(frozen=True)
class JobTypeRecord:
    id: str
    description: str
    input_schema: dict[str, Any]
    cost: CostModel
    builtin: bool = False
    connected_workers: int = 0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobTypeRecord:
        return cls(
            id=row["id"],
            description=row["description"],
            input_schema=row["input_schema"],
            cost=CostModel(row["cost_flat"], row["cost_per_km2"], row["cost_per_asset"], row["cost_minimum"]),
            builtin=row["builtin"],
            connected_workers=int(row.get("connected_workers") or 0),
        )


@dataclass(frozen=True)
class JobError:
    code: int
    reason: str
    message: str


_TIME_FIELDS = ("create_time", "dispatch_time", "start_time", "end_time", "update_time")


@dataclass(frozen=True)
class JobRecord:
    id: str
    project_id: str
    job_type_id: str
    status: str
    input_params: dict[str, Any]
    target_collection_id: str
    source_item_ids: list[str]
    progress: float
    attempt: int
    max_attempts: int
    worker_id: str
    create_time: datetime
    dispatch_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    update_time: datetime
    credits_reserved: int
    credits_charged: int
    error: JobError | None
    message: str
    cancel_requested: bool
    output_item_ids: list[str]
    sequence: int

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobRecord:
        error = row["error"]
        return cls(
            id=row["id"],
            project_id=row["project_id"],
            job_type_id=row["job_type_id"],
            status=row["status"],
            input_params=row["input_params"],
            target_collection_id=row["target_collection_id"],
            source_item_ids=list(row["source_item_ids"]),
            progress=float(row["progress"]),
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            worker_id=row["worker_id"] or "",
            create_time=row["create_time"],
            dispatch_time=row["dispatch_time"],
            start_time=row["start_time"],
            end_time=row["end_time"],
            update_time=row["update_time"],
            credits_reserved=row["credits_reserved"],
            credits_charged=row["credits_charged"],
            error=JobError(**error) if error else None,
            message=row["message"],
            cancel_requested=row["cancel_requested"],
            output_item_ids=list(row["output_item_ids"]),
            sequence=row["sequence"],
        )

    def to_json(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for name in _TIME_FIELDS:
            value = data[name]
            data[name] = value.isoformat() if value is not None else None
        data["error"] = self.error.__dict__ if self.error else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        values = dict(data)
        for name in _TIME_FIELDS:
            value = values[name]
            values[name] = datetime.fromisoformat(value) if value is not None else None
        values["error"] = JobError(**values["error"]) if values["error"] else None
        return cls(**values)


@dataclass(frozen=True)
class Dispatch:
    accepted: bool
    worker_id: str
    message: str


@dataclass(frozen=True)
class JobEvent:
    sequence: int
    event_type: str
    event_time: datetime
    job: JobRecord


@dataclass(frozen=True)
class JobCreate:
    project_id: str
    job_type_id: str
    input_params: dict[str, Any]
    target_collection_id: str
    # Set by clip.create_from_item, which has measured the AOI already.
    area_km2: float | None = None
    asset_count: int | None = None


@dataclass(frozen=True)
class JobQuery:
    project_id: str
    status: str | None
    job_type_id: str | None
    create_start: datetime | None
    create_end: datetime | None
    page_size: int
    page_token: str


@dataclass(frozen=True)
class Assignment:
    job: JobRecord
    token: str
    lease_expire_time: datetime
    sources: list[ItemRecord]


@dataclass(frozen=True)
class WorkerRecord:
    id: str
    name: str
    job_type_ids: list[str]
    capacity: int
    active_jobs: int
    connected: bool
    last_heartbeat_time: datetime
    connect_time: datetime
    # This Connect stream's session: a reconnect supersedes it.
    session_id: str = ""


@dataclass
class LeasePolicy:
    lease_seconds: float = 15.0
    heartbeat_seconds: float = 3.0
    # Retry backoff: base * 2^(attempt-1), capped, with jitter.
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 30.0
    max_attempts: int = 3

    def backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max_seconds, self.backoff_base_seconds * 2.0 ** max(0, attempt - 1))
        return delay * random.uniform(0.8, 1.2)


def aoi_area_km2(geojson: dict[str, Any], field: str, clip_to: BaseGeometry | None = None) -> float:
    """Geodesic area in km² of a GeoJSON area (optionally intersected with a footprint)."""
    aoi: Aoi | None = parse_aoi(geojson, field)
    if aoi is not None and clip_to is not None:
        aoi = aoi.within(clip_to)
    return 0.0 if aoi is None else aoi.area_km2


def priced_area_km2(job_type: JobTypeRecord, params: dict[str, Any], sources: list[ItemRecord]) -> float:
    """The area a job is priced by: its `aoi_geometry` intersected with the
    source items' footprint, or without an AOI the footprint itself (a
    whole-scene job costs its scene). A per-km² price with nothing to measure
    is refused rather than estimated at 0 km²."""
    footprint = shapely.union_all([shape(s.geometry) for s in sources]) if sources else None
    aoi = params.get("aoi_geometry")
    if isinstance(aoi, dict):
        return aoi_area_km2(aoi, "input_params.aoi_geometry", footprint)
    if footprint is not None:
        return geodesic_area_km2(footprint)
    if job_type.cost.per_km2 > 0:
        raise invalid_argument(
            "COST_NOT_ESTIMABLE",
            f"job type {job_type.id!r} is priced per km², but the input names neither an aoi_geometry "
            "nor source items whose footprint could be measured",
            field="input_params.aoi_geometry",
        )
    return 0.0


def _measures_geometry(spec: JobCreate, sources: list[ItemRecord]) -> bool:
    """Whether `_estimate` parses or measures a geometry (see priced_area_km2)."""
    return spec.area_km2 is None and (bool(sources) or isinstance(spec.input_params.get("aoi_geometry"), dict))


async def notify(conn: psycopg.AsyncConnection[Any], channel: str, payload: str) -> None:
    await conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


class JobService:
    def __init__(self, db: Database, policy: LeasePolicy | None = None) -> None:
        self._db = db
        self.policy = policy or LeasePolicy()
        self._types: dict[str, tuple[float, JobTypeRecord, jsonschema.protocols.Validator]] = {}

    @asynccontextmanager
    async def _tx(self, conn: psycopg.AsyncConnection[Any] | None) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A transaction: a savepoint inside the caller's when one is given
        (idempotent spends run in the transaction that records the key)."""
        if conn is not None:
            async with conn.transaction():
                yield conn
        else:
            async with self._db.transaction() as own:
                yield own

    # -- job types -----------------------------------------------------------

    async def upsert_job_type(self, record: JobTypeRecord, owner_token_id: str | None = None) -> JobTypeRecord:
        """Registers a job type; returns the stored definition, which differs
        from `record` when a declaration (`owner_token_id` set) may not change
        it (see upsert_job_type in jobs.sql)."""
        try:
            jsonschema.Draft202012Validator.check_schema(record.input_schema)
        except jsonschema.SchemaError as exc:
            raise invalid_argument(
                "INVALID_JOB_TYPE",
                f"the input schema of job type {record.id!r} is not a valid JSON Schema: {exc.message}"[:500],
                field="input_schema",
            ) from exc
        if not JOB_TYPE_ID.match(record.id):
            raise invalid_argument(
                "INVALID_JOB_TYPE", "job type ids are 1-63 lower-case letters, digits and '_'", field="job_type_id"
            )
        self._types.pop(record.id, None)
        async with self._db.transaction() as conn:
            await conn.execute(
                Q.upsert_job_type,
                {
                    "id": record.id,
                    "description": record.description,
                    "input_schema": Jsonb(record.input_schema),
                    "cost_flat": record.cost.flat,
                    "cost_per_km2": record.cost.per_km2,
                    "cost_per_asset": record.cost.per_asset,
                    "cost_minimum": record.cost.minimum,
                    "builtin": record.builtin,
                    "owner_token_id": owner_token_id,
                },
            )
            stored = await (await conn.execute(Q.list_job_types, self._type_query(record.id))).fetchone()
        assert stored is not None
        return JobTypeRecord.from_row(stored)

    def _type_query(self, job_type_id: str | None) -> dict[str, Any]:
        return {"id": job_type_id, "live_seconds": self.policy.lease_seconds}

    async def declare_job_types(self, principal: Principal, declared: list[JobTypeRecord]) -> None:
        """A worker's hello. Each type must be granted to its credential. A
        new type is registered and owned by the credential; an existing one
        may be declared again as it is by any granted credential, and changed
        only by its owner (built-in types by nobody): a change applies to jobs
        created afterwards."""
        seen: set[str] = set()
        for index, record in enumerate(declared):
            if not JOB_TYPE_ID.match(record.id):
                raise invalid_argument(
                    "INVALID_JOB_TYPE",
                    "job type ids are 1-63 lower-case letters, digits and '_'",
                    field=f"hello.job_types[{index}].job_type_id",
                )
            if record.id in seen:
                raise invalid_argument(
                    "INVALID_JOB_TYPE", f"job type {record.id!r} is declared twice", field=f"hello.job_types[{index}]"
                )
            seen.add(record.id)
            principal.require_job_type(record.id)
        for record in sorted(declared, key=lambda r: r.id):  # one lock order for concurrent hellos
            stored = await self.upsert_job_type(record, owner_token_id=principal.id)
            if _definition(stored) != _definition(record):
                owner = "the server (built in)" if stored.builtin else "another worker credential"
                raise permission_denied(
                    "JOB_TYPE_OWNED_BY_OTHER",
                    f"job type {record.id!r} is defined by {owner}; declare it exactly as processing.job_types.get "
                    "shows it, or use another job type id",
                    job_type_id=record.id,
                    owner="builtin" if stored.builtin else "other_credential",
                )

    async def job_types(self) -> list[JobTypeRecord]:
        async with self._db.connection() as conn:
            rows = await (await conn.execute(Q.list_job_types, self._type_query(None))).fetchall()
        return [JobTypeRecord.from_row(r) for r in rows]

    async def job_type(self, job_type_id: str, conn: psycopg.AsyncConnection[Any] | None = None) -> JobTypeRecord:
        """A job type, from a short-lived cache: types change only when a
        worker declares a new schema, and `connected_workers` is advisory."""
        return (await self._cached_type(job_type_id, conn))[0]

    async def _cached_type(
        self, job_type_id: str, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> tuple[JobTypeRecord, jsonschema.protocols.Validator]:
        if not job_type_id:
            raise invalid_argument("JOB_TYPE_REQUIRED", "job_type_id is required", field="job_type_id")
        cached = self._types.get(job_type_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1], cached[2]
        if conn is None:
            async with self._db.connection() as own:
                rows = await (await own.execute(Q.list_job_types, self._type_query(job_type_id))).fetchall()
        else:
            rows = await (await conn.execute(Q.list_job_types, self._type_query(job_type_id))).fetchall()
        if not rows:
            raise not_found("JOB_TYPE_NOT_FOUND", f"no job type {job_type_id!r}", job_type_id=job_type_id)
        record = JobTypeRecord.from_row(rows[0])
        validator = jsonschema.Draft202012Validator(record.input_schema)
        self._types[job_type_id] = (time.monotonic() + JOB_TYPE_CACHE_SECONDS, record, validator)
        return record, validator

    # -- creation and dispatch -----------------------------------------------

    def _validate_input(
        self, job_type: JobTypeRecord, validator: jsonschema.protocols.Validator, params: dict[str, Any]
    ) -> None:
        errors = sorted(validator.iter_errors(params), key=lambda e: [str(p) for p in e.absolute_path])
        if errors:
            violations = [violation for e in errors[:20] for violation in _schema_violations(e)]
            raise invalid_argument(
                "INVALID_JOB_PARAMS",
                f"input_params do not match the input schema of job type {job_type.id!r}",
                violations=violations,
                expected_schema=ExpectedSchema(job_type.id, job_type.input_schema),
            )

    async def _check_output_target(
        self, conn: psycopg.AsyncConnection[Any], job_type: JobTypeRecord, spec: JobCreate, sources: list[ItemRecord]
    ) -> None:
        """What RegisterOutputs would refuse and can be known now, refused before
        any credit moves: a malformed target collection, an output name taken.
        The name is `input_params.output_name`, or a built-in type's default
        `<source item name>_<job type>`; other defaults are checked on arrival."""
        if spec.target_collection_id and not COLLECTION_ID.match(spec.target_collection_id):
            raise invalid_argument(
                "INVALID_COLLECTION_ID",
                "target_collection_id must be 1-63 letters, digits, '_', '.' or '-'",
                field="target_collection_id",
            )
        name = spec.input_params.get("output_name")
        if not isinstance(name, str) or not name:
            name = f"{sources[0].name}_{job_type.id}" if job_type.builtin and len(sources) == 1 else None
        if name is None:
            return
        collection_id = spec.target_collection_id or job_type.id
        params = {"project_id": spec.project_id, "collection_id": collection_id, "name": name}
        if await (await conn.execute(Q.item_name_taken, params)).fetchone() is not None:
            raise already_exists(
                "OUTPUT_NAME_TAKEN",
                f"collection {collection_id!r} already has an item named {name!r}; choose another output_name",
                collection_id=collection_id,
                name=name,
            )

    async def _source_items(
        self, conn: psycopg.AsyncConnection[Any], principal: Principal, project_id: str, params: dict[str, Any]
    ) -> list[ItemRecord]:
        """Items named by the input's `source_item_id` / `source_item_ids`:
        they must exist and belong to the job's project."""
        ids: list[str] = []
        if isinstance(params.get("source_item_id"), str):
            ids.append(params["source_item_id"])
        if isinstance(params.get("source_item_ids"), list):
            ids += [i for i in params["source_item_ids"] if isinstance(i, str)]
        items = []
        for index, item_id in enumerate(dict.fromkeys(ids)):
            row = await (await conn.execute(Q.get_item, {"id": item_id})).fetchone()
            if row is None:
                raise not_found("ITEM_NOT_FOUND", f"source item {item_id!r} does not exist", item_id=item_id)
            principal.require_project(row["project_id"])
            if row["project_id"] != project_id:
                raise invalid_argument(
                    "SOURCE_IN_OTHER_PROJECT",
                    f"source item {item_id!r} belongs to project {row['project_id']!r}, not {project_id!r}",
                    field=f"input_params.source_item_ids[{index}]",
                )
            items.append(ItemRecord.from_row(row))
        return items

    def _estimate(self, job_type: JobTypeRecord, spec: JobCreate, sources: list[ItemRecord]) -> tuple[int, float, int]:
        area = spec.area_km2
        if area is None:
            area = priced_area_km2(job_type, spec.input_params, sources)
        assets = spec.asset_count
        if assets is None:
            keys = spec.input_params.get("asset_keys")
            assets = len(keys) if isinstance(keys, list) and keys else sum(len(s.assets) for s in sources)
        return job_type.cost.credits(area, assets), area, assets

    async def create(
        self,
        principal: Principal,
        spec: JobCreate,
        *,
        dispatch: bool,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> tuple[JobRecord, Dispatch | None]:
        if not spec.project_id:
            raise invalid_argument("PROJECT_ID_REQUIRED", "project_id is required", field="project_id")
        principal.require_project(spec.project_id)
        async with self._tx(conn) as tx:
            job_type, validator = await self._cached_type(spec.job_type_id, tx)
            require_input_size(spec.input_params)
            require_finite_json(spec.input_params, "input_params")
            self._validate_input(job_type, validator, spec.input_params)
            sources = await self._source_items(tx, principal, spec.project_id, spec.input_params)
            if _measures_geometry(spec, sources):
                # Off the event loop: the estimate measures the AOI or footprints.
                credits, area, assets = await asyncio.to_thread(self._estimate, job_type, spec, sources)
            else:
                # Nothing to measure: arithmetic only, not worth a thread hop.
                credits, area, assets = self._estimate(job_type, spec, sources)
            job_id = new_id("job")
            await self._check_output_target(tx, job_type, spec, sources)
            row = await (
                await tx.execute(
                    Q.insert_job,
                    {
                        "id": job_id,
                        "project_id": spec.project_id,
                        "job_type_id": job_type.id,
                        "input_params": Jsonb(spec.input_params),
                        "target_collection_id": spec.target_collection_id or job_type.id,
                        "source_item_ids": [s.id for s in sources],
                        "credits_reserved": credits,
                        "created_by": principal.id,
                        "max_attempts": self.policy.max_attempts,
                        "message": f"created; {credits} credits reserved ({area:.3f} km², {assets} assets)",
                    },
                )
            ).fetchone()
            assert row is not None
            job = JobRecord.from_row(row)
            result: Dispatch | None = None
            if dispatch:
                # Both events in one statement, `created` first.
                dispatched, result = await self._dispatch(tx, job, job_type, record=False)
                await self._record_events(tx, [(job, "created"), (dispatched, "dispatched")])
                job = dispatched
            else:
                await self._record_event(tx, job, "created")
            # Last: the project's credit account row stays locked until commit,
            # and every job of the project needs it (its commit captures on it).
            reserved = await (
                await tx.execute(
                    Q.reserve_credits,
                    {"project_id": spec.project_id, "amount": credits, "job_id": job_id, "note": "job created"},
                )
            ).fetchone()
            if reserved is None:
                balance = await (await tx.execute(Q.get_balance, {"project_id": spec.project_id})).fetchone()
                available = balance["available"] if balance else 0
                raise failed_precondition(
                    "INSUFFICIENT_CREDITS",
                    f"the job needs {credits} credits but project {spec.project_id!r} has {available} available",
                    required=str(credits),
                    available=str(available),
                )
        return job, result

    async def dispatch(
        self, principal: Principal, job_id: str, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> tuple[JobRecord, Dispatch]:
        async with self._tx(conn) as tx:
            job = await self._lock_job(tx, principal, job_id)
            if job.status in ACTIVE:
                return job, Dispatch(True, job.worker_id, f"already {job.status.lower()}")
            if job.status != "PENDING":
                raise failed_precondition(
                    "JOB_NOT_DISPATCHABLE", f"job {job_id} is {job.status} and cannot be dispatched"
                )
            return await self._dispatch(tx, job, await self.job_type(job.job_type_id, tx))

    async def _dispatch(
        self, tx: psycopg.AsyncConnection[Any], job: JobRecord, job_type: JobTypeRecord, *, record: bool = True
    ) -> tuple[JobRecord, Dispatch]:
        """Queue a PENDING job; its `dispatched` event is recorded here unless
        `record` is False (the caller records it with others)."""
        n = job_type.connected_workers
        message = (
            f"queued; {n} connected worker{'s' if n != 1 else ''} run{'s' if n == 1 else ''} {job.job_type_id}"
            if n
            else f"queued; no connected worker runs {job.job_type_id!r} yet: the job runs when one connects"
        )
        row = await (await tx.execute(Q.dispatch_job, {"id": job.id, "message": message})).fetchone()
        assert row is not None
        dispatched = JobRecord.from_row(row)
        if record:
            await self._record_event(tx, dispatched, "dispatched")
        return dispatched, Dispatch(True, "", message)

    # -- reading ---------------------------------------------------------------

    async def _lock_job(self, tx: psycopg.AsyncConnection[Any], principal: Principal, job_id: str) -> JobRecord:
        if not job_id:
            raise invalid_argument("JOB_ID_REQUIRED", "job_id is required", field="job_id")
        row = await (await tx.execute(Q.lock_job, {"id": job_id})).fetchone()
        if row is None:
            raise not_found("JOB_NOT_FOUND", f"job {job_id!r} does not exist", job_id=job_id)
        principal.require_project(row["project_id"])
        return JobRecord.from_row(row)

    async def get(self, principal: Principal, job_id: str) -> JobRecord:
        if not job_id:
            raise invalid_argument("JOB_ID_REQUIRED", "job_id is required", field="job_id")
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.get_job, {"id": job_id})).fetchone()
        if row is None:
            raise not_found("JOB_NOT_FOUND", f"job {job_id!r} does not exist", job_id=job_id)
        principal.require_project(row["project_id"])
        return JobRecord.from_row(row)

    async def list(self, principal: Principal, query: JobQuery) -> tuple[list[JobRecord], str]:
        if not query.project_id:
            raise invalid_argument("PROJECT_ID_REQUIRED", "project_id is required", field="project_id")
        principal.require_project(query.project_id)
        limit = page_size_or_default(query.page_size)
        if query.create_start and query.create_end and query.create_start >= query.create_end:
            raise invalid_argument(
                "INVALID_TIME_RANGE", "create_time_start must be before create_time_end", field="create_time_end"
            )
        filters = {
            "op": "processing.jobs.list",
            "project_id": query.project_id,
            "status": query.status,
            "job_type_id": query.job_type_id,
            "start": query.create_start.isoformat() if query.create_start else None,
            "end": query.create_end.isoformat() if query.create_end else None,
        }
        cursor = decode_page_token(query.page_token, filters)
        async with self._db.connection() as conn:
            rows = await (
                await conn.execute(
                    Q.list_jobs,
                    {
                        "project_id": query.project_id,
                        "status": query.status,
                        "job_type_id": query.job_type_id,
                        "create_start": query.create_start,
                        "create_end": query.create_end,
                        "before_time": cursor["create_time"] if cursor else None,
                        "before_id": cursor["id"] if cursor else None,
                        "limit": limit + 1,
                    },
                )
            ).fetchall()
        jobs = [JobRecord.from_row(r) for r in rows[:limit]]
        next_token = ""
        if len(rows) > limit:
            last = jobs[-1]
            next_token = encode_page_token({"create_time": last.create_time.isoformat(), "id": last.id}, filters)
        return jobs, next_token

    async def events_after(self, job_id: str, after: int) -> builtins.list[JobEvent]:
        async with self._db.connection() as conn:
            rows = await (await conn.execute(Q.events_after, {"job_id": job_id, "after": after})).fetchall()
        # Snapshots leave out input_params (stored once, on the job).
        return [
            JobEvent(
                r["sequence"],
                r["event_type"],
                r["event_time"],
                JobRecord.from_json({**r["snapshot"], "input_params": r["input_params"]}),
            )
            for r in rows
        ]

    # -- transitions -------------------------------------------------------------

    async def _record_event(self, tx: psycopg.AsyncConnection[Any], job: JobRecord, event_type: str) -> JobRecord:
        """Persist the event and NOTIFY it (one statement; see insert_events)."""
        await self._record_events(tx, [(job, event_type)])
        return job

    async def _record_events(
        self, tx: psycopg.AsyncConnection[Any], events: builtins.list[tuple[JobRecord, str]]
    ) -> None:
        """Persist and NOTIFY several events, in order, in one statement."""
        if not events:
            return
        await tx.execute(
            Q.insert_events,
            {
                "job_ids": [job.id for job, _ in events],
                "sequences": [job.sequence for job, _ in events],
                "event_types": [event_type for _, event_type in events],
                "snapshots": [Jsonb(event_snapshot(job)) for job, _ in events],
                "terminals": [job.terminal for job, _ in events],
                "worker_ids": [job.worker_id for job, _ in events],
            },
        )

    async def _finish(
        self,
        tx: psycopg.AsyncConnection[Any],
        job: JobRecord,
        status: str,
        *,
        error: JobError | None = None,
        message: str = "",
        charged: int = 0,
        output_item_ids: builtins.list[str] | None = None,
    ) -> JobRecord:
        """Terminal transition: the job row and its event. The credits are
        settled by `_settle` (the caller's last statement before commit)."""
        row = await (
            await tx.execute(
                Q.finish_job,
                {
                    "id": job.id,
                    "status": status,
                    "error": Jsonb(error.__dict__) if error else None,
                    "message": message,
                    "credits_charged": charged,
                    "output_item_ids": output_item_ids or [],
                },
            )
        ).fetchone()
        assert row is not None, f"job {job.id} finished twice"
        return await self._record_event(tx, JobRecord.from_row(row), status.lower())

    async def _finish_and_settle(
        self, tx: psycopg.AsyncConnection[Any], job: JobRecord, status: str, *, error: JobError, message: str
    ) -> JobRecord:
        """A job ended without success: finished, and its whole hold released."""
        finished = await self._finish(tx, job, status, error=error, message=message)
        await self._settle(tx, job, captured=0, waived=0, release_note=f"job {status.lower()}")
        return finished

    async def _settle(
        self,
        tx: psycopg.AsyncConnection[Any],
        job: JobRecord,
        *,
        captured: int,
        waived: int,
        release_note: str,
        waive_note: str = "",
    ) -> None:
        """Capture `captured` of the job's hold and release the rest, in one
        statement. It locks the project's credit account row until commit, a
        row every job of the project needs (create reserves on it): callers
        run it last, so the lock is held for this statement and the COMMIT only."""
        await tx.execute(
            Q.settle_credits,
            {
                "project_id": job.project_id,
                "job_id": job.id,
                "captured": captured,
                "released": job.credits_reserved - captured,
                "waived": waived,
                "capture_note": "job succeeded",
                "release_note": release_note,
                "waive_note": waive_note,
            },
        )

    async def cancel(self, principal: Principal, job_id: str, reason: str) -> JobRecord:
        async with self._db.transaction() as tx:
            job = await self._lock_job(tx, principal, job_id)
            if job.status == "CANCELLED":
                return job
            if job.terminal:
                raise failed_precondition("JOB_ALREADY_FINISHED", f"job {job_id} already {job.status}")
            message = f"cancelled: {reason}" if reason else "cancelled"
            error = JobError(int(Code.CANCELLED), "JOB_CANCELLED", message)
            if job.worker_id:  # delivered at commit, like the event
                await notify(tx, CANCEL_CHANNEL, f"{job.worker_id}:{job.id}")
            cancelled = await self._finish_and_settle(tx, job, "CANCELLED", error=error, message=message)
        return cancelled

    async def _requeue_or_fail(
        self, tx: psycopg.AsyncConnection[Any], job: JobRecord, why: str, *, count_attempt: bool = True
    ) -> JobRecord:
        if count_attempt and job.attempt >= job.max_attempts:
            error = JobError(int(Code.ABORTED), "ATTEMPTS_EXHAUSTED", f"{why}; gave up after {job.attempt} attempts")
            return await self._finish_and_settle(tx, job, "FAILED", error=error, message=error.message)
        backoff = self.policy.backoff(job.attempt) if count_attempt else 0.0
        row = await (
            await tx.execute(
                Q.requeue_job,
                {
                    "id": job.id,
                    "backoff_seconds": backoff,
                    "refund_attempt": 0 if count_attempt else 1,
                    "message": f"{why}; retrying in {backoff:.1f} s" if count_attempt else why,
                },
            )
        ).fetchone()
        assert row is not None
        return await self._record_event(tx, JobRecord.from_row(row), "retrying")

    async def expire_leases(self) -> int:
        """Re-dispatch (or fail) jobs whose worker stopped heartbeating. Safe on
        every replica at once (SKIP LOCKED)."""
        async with self._db.transaction() as tx:
            rows = await (await tx.execute(Q.expired_leases)).fetchall()
            for row in rows:
                locked = await (await tx.execute(Q.lock_job, {"id": row["id"]})).fetchone()
                assert locked is not None
                job = JobRecord.from_row(locked)
                await self._requeue_or_fail(tx, job, f"worker {job.worker_id} lost its lease")
        return len(rows)

    # -- workers -----------------------------------------------------------------

    async def register_worker(
        self, principal: Principal, worker_id: str, name: str, job_type_ids: builtins.list[str], capacity: int
    ) -> WorkerRecord:
        """A new session of a worker; resuming `worker_id` supersedes its
        earlier session (whose cleanup then leaves this one alone)."""
        if worker_id and not WORKER_ID.match(worker_id):
            raise invalid_argument(
                "INVALID_WORKER_ID",
                "worker_id is 1-64 letters, digits, '_', '.' or '-' (starting with a letter or digit), "
                "or empty for a new worker",
                field="hello.worker_id",
            )
        if len(name) > MAX_WORKER_NAME_CHARS:
            raise invalid_argument(
                "INVALID_WORKER_NAME", f"name is at most {MAX_WORKER_NAME_CHARS} characters", field="hello.name"
            )
        session_id = new_id("ws")
        async with self._db.transaction() as tx:
            row = await (
                await tx.execute(
                    Q.insert_worker,
                    {
                        "id": worker_id or new_id("wk"),
                        "token_id": principal.id,
                        "name": name,
                        "job_type_ids": job_type_ids,
                        "capacity": capacity,
                        "session_id": session_id,
                    },
                )
            ).fetchone()
            if row is None:
                raise permission_denied("WORKER_ID_TAKEN", f"worker id {worker_id!r} belongs to another credential")
            for job_type_id in job_type_ids:
                await notify(tx, DISPATCH_CHANNEL, job_type_id)
        return WorkerRecord(
            row["id"], row["name"], row["job_type_ids"], row["capacity"], 0, True,
            row["last_heartbeat_time"], row["connect_time"], session_id,
        )  # fmt: skip

    async def heartbeat(self, worker_id: str, active_job_ids: builtins.list[str], session_id: str) -> bool:
        """Renews the worker's leases; False when a newer session of the
        worker took over (this one should end)."""
        async with self._db.connection() as conn:
            session = {"id": worker_id, "session_id": session_id}
            current = await (await conn.execute(Q.worker_heartbeat, session)).fetchone()
            if active_job_ids:
                await conn.execute(
                    Q.renew_leases,
                    {"worker_id": worker_id, "job_ids": active_job_ids, "lease_seconds": self.policy.lease_seconds},
                )
        return current is not None

    async def worker_disconnected(self, worker_id: str, session_id: str) -> None:
        async with self._db.connection() as conn:
            await conn.execute(Q.worker_disconnected, {"id": worker_id, "session_id": session_id})

    async def workers(self, include_disconnected: bool) -> builtins.list[WorkerRecord]:
        """Workers with an open session that heartbeated within the lease
        (all, with `include_disconnected`)."""
        params = {"include_disconnected": include_disconnected, "live_seconds": self.policy.lease_seconds}
        async with self._db.connection() as conn:
            rows = await (await conn.execute(Q.list_workers, params)).fetchall()
        return [
            WorkerRecord(
                r["id"],
                r["name"],
                r["job_type_ids"],
                r["capacity"],
                r["active_jobs"],
                r["live"],
                r["last_heartbeat_time"],
                r["connect_time"],
            )
            for r in rows
        ]

    async def active_jobs(self, worker_ids: builtins.list[str]) -> dict[str, int]:
        if not worker_ids:
            return {}
        async with self._db.connection() as conn:
            rows = await (await conn.execute(Q.active_jobs_by_worker, {"worker_ids": worker_ids})).fetchall()
        return {r["worker_id"]: r["n"] for r in rows}

    async def claim(
        self,
        worker_id: str,
        job_type_ids: builtins.list[str],
        capacity: int,
        *,
        session_id: str,
        project_ids: frozenset[str] | None = None,
    ) -> builtins.list[Assignment]:
        """Hand queued jobs to a worker: each gets a fresh job token bound to
        (job, attempt) and a lease. `project_ids` limits the claim to those
        projects' jobs (a worker credential limited to projects); None claims
        from every project. A superseded session claims nothing."""
        assignments = []
        async with self._db.transaction() as tx:
            rows = await (
                await tx.execute(
                    Q.claim_jobs,
                    {
                        "worker_id": worker_id,
                        "job_type_ids": job_type_ids,
                        "capacity": capacity,
                        "lease_seconds": self.policy.lease_seconds,
                        "session_id": session_id,
                        "project_ids": sorted(project_ids) if project_ids is not None else None,
                    },
                )
            ).fetchall()
            jobs = [JobRecord.from_row(row) for row in rows]
            tokens = [JOB_TOKEN_PREFIX + secrets.token_urlsafe(32) for _ in jobs]
            # One statement each for all the claimed jobs' events and tokens.
            await self._record_events(tx, [(job, "assigned") for job in jobs])
            if jobs:
                await tx.execute(
                    Q.insert_job_tokens,
                    {
                        "token_hashes": [hash_token(token) for token in tokens],
                        "job_ids": [job.id for job in jobs],
                        "attempts": [job.attempt for job in jobs],
                        "worker_id": worker_id,
                    },
                )
            for row, job, token in zip(rows, jobs, tokens, strict=True):
                sources = []
                for item_id in job.source_item_ids:
                    item_row = await (await tx.execute(Q.get_item, {"id": item_id})).fetchone()
                    if item_row is not None:
                        sources.append(ItemRecord.from_row(item_row))
                assert row["lease_expire_time"] is not None
                assignments.append(Assignment(job, token, row["lease_expire_time"], sources))
        return assignments

    # -- job-token calls -----------------------------------------------------------

    async def _current_attempt(self, tx: psycopg.AsyncConnection[Any], principal: Principal, job_id: str) -> JobRecord:
        """Lock the job and check the token's attempt is the live one."""
        require_job_token(principal, job_id)
        row = await (await tx.execute(Q.lock_job, {"id": job_id})).fetchone()
        assert row is not None  # the token references it
        job = JobRecord.from_row(row)
        if job.attempt != principal.attempt or job.worker_id != principal.name or job.terminal:
            raise failed_precondition(
                "JOB_ATTEMPT_OVER",
                f"attempt {principal.attempt} of job {job_id} is over (job is {job.status}, attempt {job.attempt})",
            )
        return job

    async def report_progress(self, principal: Principal, job_id: str, progress: float, message: str) -> bool:
        """Returns True when the job was cancelled (the worker should stop)."""
        progress = 0.0 if math.isnan(progress) else min(1.0, max(0.0, progress))
        try:
            require_job_token(principal, job_id)
            params = {
                "id": job_id,
                "attempt": principal.attempt,
                "worker_id": principal.name,
                "progress": progress,
                "message": message[:500],
                "lease_seconds": self.policy.lease_seconds,
            }
            # One statement (the update, its event and NOTIFY): atomic without a transaction.
            async with self._db.connection() as conn:
                row = await (await conn.execute(Q.report_progress, params)).fetchone()
            if row is None:
                async with self._db.transaction() as tx:
                    # The attempt is over: the lock and check say how (JOB_ATTEMPT_OVER).
                    await self._current_attempt(tx, principal, job_id)
        except DomainError as err:
            if err.reason == "JOB_ATTEMPT_OVER" and await self._cancelled(job_id):
                return True
            raise
        return False

    async def _cancelled(self, job_id: str) -> bool:
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.get_job, {"id": job_id})).fetchone()
        return row is not None and row["status"] == "CANCELLED"

    async def report_failure(
        self, principal: Principal, job_id: str, reason: str, message: str, retryable: bool
    ) -> JobRecord:
        async with self._db.transaction() as tx:
            job = await self._current_attempt(tx, principal, job_id)
            reason = reason if reason and reason.replace("_", "").isalnum() and reason.isupper() else "JOB_FAILED"
            if retryable:
                return await self._requeue_or_fail(tx, job, f"attempt {job.attempt} failed: {message[:300]}")
            error = JobError(int(Code.ABORTED), reason, message[:1000] or "the job failed")
            return await self._finish_and_settle(tx, job, "FAILED", error=error, message=error.message)

    async def release(self, principal: Principal, job_id: str, reason: str) -> JobRecord:
        async with self._db.transaction() as tx:
            job = await self._current_attempt(tx, principal, job_id)
            return await self._requeue_or_fail(
                tx,
                job,
                f"handed back by worker {job.worker_id}: {reason[:200] or 'shutting down'}",
                count_attempt=False,
            )

    @asynccontextmanager
    async def committing_outputs(
        self, principal: Principal, job_id: str, probe: CommitProbe | None = None
    ) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], JobRecord]]:
        """The transaction RegisterOutputs commits in: the job locked and
        checked to be the token's live attempt."""
        async with self._db.transaction(probe) as tx:
            job = await self._current_attempt(tx, principal, job_id)
            yield tx, job

    async def fail_attempt(self, principal: Principal, job_id: str, error: JobError) -> JobRecord | None:
        """End the job FAILED with `error`, no retry (its outputs were refused for
        good); None when the token's attempt is over already."""
        try:
            async with self._db.transaction() as tx:
                job = await self._current_attempt(tx, principal, job_id)
                return await self._finish_and_settle(tx, job, "FAILED", error=error, message=error.message)
        except DomainError as err:
            if err.reason == "JOB_ATTEMPT_OVER":
                return None
            raise

    async def succeed(
        self, tx: psycopg.AsyncConnection[Any], job: JobRecord, *, actual_cost: int, output_item_ids: builtins.list[str]
    ) -> JobRecord:
        """Mark the job SUCCEEDED (its row and event); the caller then runs
        `settle_success`, last before its commit. The hold is the price quoted
        at creation and the most a job costs: below it the rest is released;
        above it the hold is captured and the excess is waived, recorded as a
        `waive` ledger entry and in the job's message, never dropped silently."""
        charged = min(actual_cost, job.credits_reserved)
        waived = actual_cost - charged
        message = f"{len(output_item_ids)} output item(s) registered"
        if waived:
            message += f"; actual cost {actual_cost} credits exceeds the {charged} reserved: {waived} waived"
        return await self._finish(
            tx, job, "SUCCEEDED", message=message, charged=charged, output_item_ids=output_item_ids
        )

    async def settle_success(self, tx: psycopg.AsyncConnection[Any], job: JobRecord, *, actual_cost: int) -> None:
        """The credits of a job `succeed` finished: capture the cost (at most
        the hold), release the rest, record any excess as waived. Run it last
        in the transaction: it locks the project's credit account row."""
        charged = min(actual_cost, job.credits_reserved)
        waived = actual_cost - charged
        await self._settle(
            tx,
            job,
            captured=charged,
            waived=waived,
            release_note="unspent remainder",
            waive_note=f"actual cost {actual_cost} exceeds the {charged} reserved",
        )

    async def expire_idempotency_keys(self) -> None:
        async with self._db.connection() as conn:
            await idempotency.expire(conn)

    async def store_response(self, tx: psycopg.AsyncConnection[Any], job_id: str, response: bytes) -> None:
        await tx.execute(Q.store_outputs_response, {"id": job_id, "response": response})

    async def outputs_state(self, principal: Principal, job_id: str) -> tuple[JobRecord, bytes | None]:
        """Before receiving outputs: the job, and the stored response when this
        token's attempt already committed (a retry); fails fast when the
        attempt is over otherwise."""
        require_job_token(principal, job_id)
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.get_job, {"id": job_id})).fetchone()
        assert row is not None  # the token references it
        job = JobRecord.from_row(row)
        if job.status == "SUCCEEDED" and job.attempt == principal.attempt and row["outputs_response"] is not None:
            return job, bytes(row["outputs_response"])
        if job.attempt != principal.attempt or job.worker_id != principal.name or job.terminal:
            raise failed_precondition(
                "JOB_ATTEMPT_OVER",
                f"attempt {principal.attempt} of job {job_id} is over (job is {job.status}, attempt {job.attempt})",
            )
        return job, None

    # -- provenance --------------------------------------------------------------

    async def lineage(
        self, principal: Principal, item_id: str, direction: str, max_depth: int
    ) -> tuple[builtins.list[tuple[str, str, str]], builtins.list[tuple[str, str, str, str]]]:
        """Nodes (kind, id, label) and edges (output, relation, job, source)
        reachable from `item_id` within `max_depth` edges."""
        if not item_id:
            raise invalid_argument("ITEM_ID_REQUIRED", "item_id is required", field="item_id")
        direction = direction or "both"
        if direction not in ("upstream", "downstream", "both"):
            raise invalid_argument(
                "INVALID_DIRECTION", "direction must be upstream, downstream or both", field="direction"
            )
        if not 0 <= max_depth <= 32:
            raise invalid_argument("INVALID_MAX_DEPTH", "max_depth must be 1..32 (0 means 8)", field="max_depth")
        depth = max_depth or 8
        async with self._db.connection() as conn:
            start = await (await conn.execute(Q.get_item, {"id": item_id})).fetchone()
            if start is None:
                raise not_found("ITEM_NOT_FOUND", f"item {item_id!r} does not exist", item_id=item_id)
            principal.require_project(start["project_id"])
            edges: dict[tuple[str, str, str, str], None] = {}
            up, down = {item_id}, {item_id}
            for _ in range(depth):
                frontier_up: set[str] = set()
                if direction in ("upstream", "both") and up:
                    for e in await (await conn.execute(Q.item_sources, {"ids": list(up)})).fetchall():
                        edges[(e["output_item_id"], e["relation"], e["job_id"], e["source_item_id"] or "")] = None
                        if e["source_item_id"]:
                            frontier_up.add(e["source_item_id"])
                frontier_down: set[str] = set()
                if direction in ("downstream", "both") and down:
                    rows = await (await conn.execute(Q.item_derivatives, {"ids": list(down)})).fetchall()
                    derived = {e["output_item_id"] for e in rows}
                    if derived:
                        rows += await (await conn.execute(Q.item_sources, {"ids": list(derived)})).fetchall()
                    for e in rows:
                        edges[(e["output_item_id"], e["relation"], e["job_id"], e["source_item_id"] or "")] = None
                    frontier_down = derived
                up, down = frontier_up, frontier_down
                if not up and not down:
                    break
            item_ids = [item_id, *sorted({e[0] for e in edges} | {e[3] for e in edges if e[3]} - {item_id})]
            job_ids = sorted({e[2] for e in edges})
            labels = await (await conn.execute(Q.lineage_labels, {"item_ids": item_ids, "job_ids": job_ids})).fetchall()
        by_key = {(r["kind"], r["id"]): r for r in labels}
        nodes = [("item", i, by_key[("item", i)]["label"]) for i in item_ids if ("item", i) in by_key]
        nodes += [("job", j, by_key[("job", j)]["label"]) for j in job_ids if ("job", j) in by_key]
        return nodes, list(edges)


def _definition(job_type: JobTypeRecord) -> tuple[object, ...]:
    """What a declaration defines (ownership decides who may change it)."""
    return (job_type.description, job_type.input_schema, job_type.cost)


def _schema_violations(error: jsonschema.ValidationError) -> list[FieldViolation]:
    """Violations naming the offending member: a missing or unexpected
    property is reported at its own path, not at its parent object's."""
    base = "input_params" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    instance = error.instance if isinstance(error.instance, dict) else {}
    # The stubs type these members "or unset"; a validator's error always has them.
    if error.validator == "required" and isinstance(error.validator_value, list):
        missing = [name for name in error.validator_value if name not in instance]
        return [FieldViolation(f"{base}.{name}", f"{name!r} is required") for name in missing]
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = set(error.schema.get("properties", {})) if isinstance(error.schema, Mapping) else set()
        return [
            FieldViolation(f"{base}.{name}", f"unexpected property {name!r}") for name in instance if name not in known
        ]
    return [FieldViolation(base, error.message[:300])]


def event_snapshot(job: JobRecord) -> dict[str, Any]:
    """A job event's snapshot: the job without its input_params, which never
    change and are stored once, on the job (readers put them back)."""
    snapshot = job.to_json()
    del snapshot["input_params"]
    return snapshot


def require_input_size(params: dict[str, Any]) -> None:
    size = len(json.dumps(params, separators=(",", ":"), ensure_ascii=False, default=str).encode())
    if size > MAX_INPUT_PARAMS_BYTES:
        raise invalid_argument(
            "INPUT_TOO_LARGE",
            f"input_params take {size} bytes as JSON; at most {MAX_INPUT_PARAMS_BYTES} are accepted "
            "(pass large data as an uploaded item instead)",
            field="input_params",
            metadata={"max_bytes": str(MAX_INPUT_PARAMS_BYTES)},
        )


def require_job_token(principal: Principal, job_id: str) -> None:
    if principal.kind != "job":
        raise permission_denied("JOB_TOKEN_REQUIRED", "this call takes the job token of an assignment")
    if principal.job_id != job_id:
        raise permission_denied(
            "JOB_TOKEN_MISMATCH", f"this job token belongs to job {principal.job_id}, not {job_id!r}"
        )
