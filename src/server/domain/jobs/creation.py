"""Creating a job: its input checked against its type, its sources and output
target checked, its price estimated and reserved, and (if asked) dispatched:
all in one transaction, so a refused job holds no credits."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import jsonschema
import psycopg
from psycopg.types.json import Jsonb

from geopera_kernel.raster.job_types import ANALYTICS
from geopera_kernel.raster.tracing import current_traceparent
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.call_commit import PLAIN_COMMIT, CallCommit
from geopera_kernel.server.domain.jobs.job_types import JobTypeRecord, validate_input
from geopera_kernel.server.domain.jobs.pricing import Estimate, estimate, measures_geometry
from geopera_kernel.server.domain.jobs.records import ACTIVE, Dispatch, JobCreate, JobRecord, JobSpend
from geopera_kernel.server.domain.jobs.transitions import JobTransitions
from geopera_kernel.server.domain.models import ItemRecord
from geopera_kernel.server.domain.names import COLLECTION_ID
from geopera_kernel.server.errors import DomainError, already_exists, failed_precondition, invalid_argument, not_found
from geopera_kernel.server.ids import new_id
from geopera_kernel.server.store import Q
from geopera_kernel.server.validation import require_finite_json

MAX_INPUT_PARAMS_BYTES = 64 << 10


class JobCreation(JobTransitions):
    async def create(
        self,
        principal: Principal,
        spec: JobCreate,
        *,
        dispatch: bool,
        commit: CallCommit[JobSpend] = PLAIN_COMMIT,
    ) -> JobSpend:
        """Under a key (`commit.keyed`), the job is created once per idempotency key.
        With `commit.validate_only` every step runs, the hold included, in a transaction
        that is then rolled back: the answer is the job as it would be (with
        an empty id) and the estimate the real call would reserve."""
        if not spec.project_id:
            raise invalid_argument("PROJECT_ID_REQUIRED", "project_id is required", field="project_id")
        principal.require_project(spec.project_id)
        async with commit.transaction(self._db, spec.project_id) as tx:
            refuse_server_only_type(spec)
            job_type, validator = await self.types.with_validator(spec.job_type_id, tx)
            check_input(job_type, validator, spec.input_params)
            sources = await _source_items(tx, principal, spec.project_id, spec.input_params)
            if measures_geometry(spec, sources):
                # Off the event loop: the estimate measures the AOI or footprints.
                credits, area, assets = await asyncio.to_thread(estimate, job_type, spec, sources)
            else:
                # Nothing to measure: arithmetic only, not worth a thread hop.
                credits, area, assets = estimate(job_type, spec, sources)
            price = Estimate(job_type.cost, area, assets, credits)
            job_id = new_id("job")
            await _check_output_target(tx, job_type, spec, sources)
            job = await self._insert_job(
                tx,
                principal,
                {
                    "id": job_id,
                    "project_id": spec.project_id,
                    "job_type_id": job_type.id,
                    "input_params": Jsonb(spec.input_params),
                    "target_collection_id": spec.target_collection_id or job_type.id,
                    "source_item_ids": [s.id for s in sources],
                    "credits_reserved": credits,
                    "message": f"created; {credits} credits reserved ({area:.3f} km², {assets} assets)",
                    "resubmitted_from": spec.resubmitted_from or None,
                },
            )
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
            after = await self.credits.reserve(tx, spec.project_id, job_id, credits, price.metadata())
            spend = JobSpend(job, result, replace(price, available=after + credits))
            await commit.finish(tx, spend)
        if commit.validate_only:
            return replace(spend, job=replace(job, id=""))
        return spend

    async def create_builtin_dispatched(
        self,
        tx: psycopg.AsyncConnection[Any],
        principal: Principal,
        *,
        project_id: str,
        job_type_id: str,
        input_params: dict[str, Any],
        source_item_ids: list[str],
    ) -> JobRecord:
        """A job of a built-in type only the server creates (analytics.submit, which
        checked its input and sources), holding no credits: created and dispatched at
        once (events `created`, `dispatched`) in the caller's transaction."""
        job_type = await self.types.get(job_type_id, tx)
        job = await self._insert_job(
            tx,
            principal,
            {
                "id": new_id("job"),
                "project_id": project_id,
                "job_type_id": job_type_id,
                "input_params": Jsonb(input_params),
                "target_collection_id": job_type_id,
                "source_item_ids": source_item_ids,
                "credits_reserved": 0,
                "message": f"created; 0 credits reserved ({job_type_id} jobs cost no credits)",
                "resubmitted_from": None,
            },
        )
        dispatched, _ = await self._dispatch(tx, job, job_type, record=False)
        await self._record_events(tx, [(job, "created"), (dispatched, "dispatched")])
        return dispatched

    async def _insert_job(
        self, tx: psycopg.AsyncConnection[Any], principal: Principal, job: dict[str, Any]
    ) -> JobRecord:
        """A single job's row (Q.insert_job's `job` columns), by `principal`, with the
        policy's attempts and the caller's trace, in no batch."""
        params = {
            **job,
            "created_by": principal.id,
            "max_attempts": self.policy.max_attempts,
            "batch_id": None,
            "traceparent": current_traceparent(),
        }
        row = await (await tx.execute(Q.insert_job, params)).fetchone()
        assert row is not None
        return JobRecord.from_row(row)

    async def dispatch(
        self,
        principal: Principal,
        job_id: str,
        *,
        commit: CallCommit[JobSpend] = PLAIN_COMMIT,
    ) -> JobSpend:
        """Under a key (`commit.keyed`), answered once per idempotency key. Dispatching
        moves no credits (the job holds them since its creation): the estimate is
        that hold. With `commit.validate_only` it runs and is rolled back."""
        # The key belongs to the job's project, known before its transaction.
        project_id = (await self._read_job(principal, job_id)).project_id if commit.keyed is not None else ""
        async with commit.transaction(self._db, project_id) as tx:
            job, result = await self._dispatch_locked(tx, principal, job_id)
            balance = await (await tx.execute(Q.get_balance, {"project_id": job.project_id})).fetchone()
            available = int(balance["available"]) if balance else 0
            price = Estimate(None, 0.0, 0, job.credits_reserved, available, already_reserved=True)
            spend = JobSpend(job, result, price)
            await commit.finish(tx, spend)
        return spend

    async def _dispatch_locked(
        self, tx: psycopg.AsyncConnection[Any], principal: Principal, job_id: str
    ) -> tuple[JobRecord, Dispatch]:
        job = await self._lock_job(tx, principal, job_id)
        if job.status in ACTIVE:
            return job, Dispatch(True, job.worker_id, f"already {job.status.lower()}")
        if job.status != "PENDING":
            raise failed_precondition("JOB_NOT_DISPATCHABLE", f"job {job_id} is {job.status} and cannot be dispatched")
        return await self._dispatch(tx, job, await self.types.get(job.job_type_id, tx))

    async def _dispatch(
        self, tx: psycopg.AsyncConnection[Any], job: JobRecord, job_type: JobTypeRecord, *, record: bool = True
    ) -> tuple[JobRecord, Dispatch]:
        """Queue a PENDING job; its `dispatched` event is recorded here unless
        `record` is False (the caller records it with others)."""
        message = queued_message(job_type)
        row = await (await tx.execute(Q.dispatch_job, {"id": job.id, "message": message})).fetchone()
        assert row is not None
        dispatched = JobRecord.from_row(row)
        if record:
            await self._record_event(tx, dispatched, "dispatched")
        return dispatched, Dispatch(True, "", message)


def queued_message(job_type: JobTypeRecord) -> str:
    """A dispatched job's message: who can run it."""
    n = job_type.connected_workers
    if n:
        return f"queued; {n} connected worker{'s' if n != 1 else ''} run{'s' if n == 1 else ''} {job_type.id}"
    return f"queued; no connected worker runs {job_type.id!r} yet: the job runs when one connects"


async def _check_output_target(
    conn: psycopg.AsyncConnection[Any], job_type: JobTypeRecord, spec: JobCreate, sources: list[ItemRecord]
) -> None:
    """What RegisterOutputs would refuse and can be known now, refused before
    any credit moves: a malformed target collection, an output name taken.
    The name is `input_params.output_name`, or a built-in type's default
    `<source item name>_<job type>`; other defaults are checked on arrival."""
    check_target_collection(spec)
    output = output_of(job_type, spec, sources)
    if output is None:
        return
    collection_id, name = output
    params = {"project_id": spec.project_id, "collection_id": collection_id, "name": name}
    if await (await conn.execute(Q.item_name_taken, params)).fetchone() is not None:
        raise output_name_taken(collection_id, name)


def refuse_server_only_type(spec: JobCreate) -> None:
    """Analytics jobs are made only by analytics.submit, which checks their method's params
    and the caller's access to the items those params name (a job's own schema cannot),
    and prices them at nothing: `create` and each request of a batch refuse them."""
    if spec.job_type_id == ANALYTICS.id:
        raise invalid_argument(
            "USE_ANALYTICS_SUBMIT", "analytics jobs are created with analytics.submit", field="job_type_id"
        )


def check_target_collection(spec: JobCreate) -> None:
    if spec.target_collection_id:
        COLLECTION_ID.require(
            spec.target_collection_id,
            what="target_collection_id",
            reason="INVALID_COLLECTION_ID",
            field="target_collection_id",
        )


def output_of(job_type: JobTypeRecord, spec: JobCreate, sources: list[ItemRecord]) -> tuple[str, str] | None:
    """(collection, item name) the job's output takes, when known now."""
    name = spec.input_params.get("output_name")
    if not isinstance(name, str) or not name:
        name = f"{sources[0].name}_{job_type.id}" if job_type.builtin and len(sources) == 1 else None
    if name is None:
        return None
    return spec.target_collection_id or job_type.id, name


def output_name_taken(collection_id: str, name: str) -> DomainError:
    return already_exists(
        "OUTPUT_NAME_TAKEN",
        f"collection {collection_id!r} already has an item named {name!r}; choose another output_name",
        collection_id=collection_id,
        name=name,
    )


async def _source_items(
    conn: psycopg.AsyncConnection[Any], principal: Principal, project_id: str, params: dict[str, Any]
) -> list[ItemRecord]:
    """Items named by the input's `source_item_id` / `source_item_ids`:
    they must exist and belong to the job's project."""
    rows = {}
    for item_id in named_source_ids(params):
        row = await (await conn.execute(Q.get_item, {"id": item_id})).fetchone()
        if row is not None:
            rows[item_id] = row
    return sources_among(principal, project_id, params, rows)


def named_source_ids(params: dict[str, Any]) -> list[str]:
    """The item ids an input names (`source_item_id`, `source_item_ids`), once each, in order."""
    ids: list[str] = []
    if isinstance(params.get("source_item_id"), str):
        ids.append(params["source_item_id"])
    if isinstance(params.get("source_item_ids"), list):
        ids += [i for i in params["source_item_ids"] if isinstance(i, str)]
    return list(dict.fromkeys(ids))


def sources_among(
    principal: Principal, project_id: str, params: dict[str, Any], rows: dict[str, dict[str, Any]]
) -> list[ItemRecord]:
    """The input's source items from item rows read already (by id): each
    must exist and belong to the job's project."""
    items = []
    for index, item_id in enumerate(named_source_ids(params)):
        row = rows.get(item_id)
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


def check_input(job_type: JobTypeRecord, validator: jsonschema.protocols.Validator, params: dict[str, Any]) -> None:
    """A job's input_params as `create` and each request of a batch take them: not too large,
    finite JSON, matching the type's input schema."""
    require_input_size(params)
    require_finite_json(params, "input_params")
    validate_input(job_type, validator, params)


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
