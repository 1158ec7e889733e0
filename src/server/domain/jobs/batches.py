"""Creating up to 1,000 jobs of one project in one call and one transaction:
each request checked and priced as `create` does, then every job inserted,
dispatched, announced and held in a few statements (never one per job)."""

from __future__ import annotations

import asyncio
import builtins
from dataclasses import dataclass, replace
from typing import Any

import jsonschema
import psycopg
from psycopg.types.json import Jsonb

from geopera_kernel.raster.domain_errors import FieldViolation
from geopera_kernel.raster.tracing import current_traceparent
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.call_commit import PLAIN_COMMIT, CallCommit
from geopera_kernel.server.domain.jobs.creation import (
    JobCreation,
    check_input,
    check_target_collection,
    named_source_ids,
    output_name_taken,
    output_of,
    queued_message,
    refuse_server_only_type,
    sources_among,
)
from geopera_kernel.server.domain.jobs.job_types import JobTypeRecord
from geopera_kernel.server.domain.jobs.pricing import estimate, measures_geometry
from geopera_kernel.server.domain.jobs.records import JobCreate, JobRecord
from geopera_kernel.server.domain.models import ItemRecord
from geopera_kernel.server.errors import DomainError, failed_precondition, invalid_argument
from geopera_kernel.server.ids import new_id
from geopera_kernel.server.store import Q

MAX_BATCH_REQUESTS = 1000


@dataclass(frozen=True)
class BatchOutcome:
    """Index-aligned with the requests: each its job or its error."""

    batch_id: str
    jobs: builtins.list[JobRecord | None]
    errors: builtins.list[DomainError | None]
    credits_reserved: int


@dataclass(frozen=True)
class _Priced:
    index: int
    spec: JobCreate
    job_type: JobTypeRecord
    sources: builtins.list[ItemRecord]
    credits: int = 0
    area: float = 0.0
    assets: int = 0


def at_request(error: DomainError, index: int) -> DomainError:
    """A request's error as the whole batch's: which request, its fields under `requests[i]`."""
    return replace(
        error,
        message=f"requests[{index}]: {error.message}",
        violations=[FieldViolation(f"requests[{index}].{v.field}", v.description) for v in error.violations],
        metadata={**error.metadata, "request_index": str(index)},
    )


def _estimate_all(priced: builtins.list[_Priced]) -> builtins.list[tuple[int, float, int] | DomainError]:
    """Every request's price (run off the event loop when any measures a geometry)."""
    out: builtins.list[tuple[int, float, int] | DomainError] = []
    for p in priced:
        try:
            out.append(estimate(p.job_type, p.spec, p.sources))
        except DomainError as exc:
            out.append(exc)
    return out


class JobBatches(JobCreation):
    async def create_batch(
        self,
        principal: Principal,
        project_id: str,
        specs: builtins.list[JobCreate],
        *,
        all_or_nothing: bool,
        dispatch: bool,
        commit: CallCommit[BatchOutcome] = PLAIN_COMMIT,
    ) -> BatchOutcome:
        if not project_id:
            raise invalid_argument("PROJECT_ID_REQUIRED", "project_id is required", field="project_id")
        principal.require_project(project_id)
        if not specs:
            raise invalid_argument("BATCH_EMPTY", "a batch needs at least one request", field="requests")
        if len(specs) > MAX_BATCH_REQUESTS:
            raise invalid_argument(
                "BATCH_TOO_LARGE",
                f"a batch takes at most {MAX_BATCH_REQUESTS} requests, not {len(specs)}",
                field="requests",
                metadata={"max_requests": str(MAX_BATCH_REQUESTS)},
            )
        errors: builtins.list[DomainError | None] = [None] * len(specs)

        def refuse(index: int, error: DomainError) -> None:
            if all_or_nothing:
                raise at_request(error, index)
            errors[index] = error

        async with commit.transaction(self._db, project_id) as tx:
            priced = await self._checked(tx, principal, project_id, specs, refuse)
            priced = await self._free_outputs(tx, project_id, priced, refuse)
            # The account row is locked from here to commit: what the batch can
            # hold is decided once, and no other spend of the project slips in.
            available = await self.credits.lock_available(tx, project_id)
            priced = _within(priced, available, all_or_nothing, errors)
            batch_id = new_id("batch") if priced else ""
            jobs = await self._insert(tx, principal, project_id, batch_id, priced, dispatch)
            if not await self.credits.reserve_batch(
                tx, project_id, [j.id for j in jobs], [p.credits for p in priced]
            ):  # cannot happen under the lock; refused rather than over-spent
                raise failed_precondition("INSUFFICIENT_CREDITS", "the batch no longer fits the balance")
            by_index: builtins.list[JobRecord | None] = [None] * len(specs)
            for p, job in zip(priced, jobs, strict=True):
                by_index[p.index] = replace(job, id="", batch_id="") if commit.validate_only else job
            outcome = BatchOutcome(
                "" if commit.validate_only else batch_id, by_index, errors, sum(p.credits for p in priced)
            )
            await commit.finish(tx, outcome)
        return outcome

    async def _checked(
        self,
        tx: psycopg.AsyncConnection[Any],
        principal: Principal,
        project_id: str,
        specs: builtins.list[JobCreate],
        refuse: Any,
    ) -> builtins.list[_Priced]:
        """Each request checked as `create` checks it (types and source items read once) and priced."""
        types: dict[str, tuple[JobTypeRecord, jsonschema.protocols.Validator] | DomainError] = {}
        wanted = list(dict.fromkeys(i for s in specs for i in named_source_ids(s.input_params)))
        rows = {r["id"]: r for r in await (await tx.execute(Q.get_items, {"ids": wanted})).fetchall()} if wanted else {}
        checked: builtins.list[_Priced] = []
        for index, spec in enumerate(specs):
            try:
                refuse_server_only_type(spec)
                typed = types.get(spec.job_type_id)
                if typed is None:
                    try:
                        typed = await self.types.with_validator(spec.job_type_id, tx)
                    except DomainError as exc:
                        typed = exc
                    types[spec.job_type_id] = typed
                if isinstance(typed, DomainError):
                    raise typed
                job_type, validator = typed
                check_input(job_type, validator, spec.input_params)
                check_target_collection(spec)
                sources = sources_among(principal, project_id, spec.input_params, rows)
                checked.append(_Priced(index, spec, job_type, sources))
            except DomainError as exc:
                refuse(index, exc)
        if any(measures_geometry(p.spec, p.sources) for p in checked):
            prices = await asyncio.to_thread(_estimate_all, checked)
        else:
            prices = _estimate_all(checked)
        priced = []
        for p, price in zip(checked, prices, strict=True):
            if isinstance(price, DomainError):
                refuse(p.index, price)
            else:
                priced.append(replace(p, credits=price[0], area=price[1], assets=price[2]))
        return priced

    async def _free_outputs(
        self, tx: psycopg.AsyncConnection[Any], project_id: str, priced: builtins.list[_Priced], refuse: Any
    ) -> builtins.list[_Priced]:
        """Refuses a request whose output name is taken, by an item or by an earlier request of the batch."""
        outputs = {p.index: output_of(p.job_type, p.spec, p.sources) for p in priced}
        named = [o for o in outputs.values() if o is not None]
        taken: set[tuple[str, str]] = set()
        if named:
            params = {"project_id": project_id, "collection_ids": [c for c, _ in named], "names": [n for _, n in named]}
            rows = await (await tx.execute(Q.item_names_taken, params)).fetchall()
            taken = {(r["collection_id"], r["name"]) for r in rows}
        kept = []
        for p in priced:
            output = outputs[p.index]
            if output is not None:
                if output in taken:
                    refuse(p.index, output_name_taken(*output))
                    continue
                taken.add(output)
            kept.append(p)
        return kept

    async def _insert(
        self,
        tx: psycopg.AsyncConnection[Any],
        principal: Principal,
        project_id: str,
        batch_id: str,
        priced: builtins.list[_Priced],
        dispatch: bool,
    ) -> builtins.list[JobRecord]:
        """The jobs, created (and dispatched) with their events: three statements."""
        if not priced:
            return []
        job_ids = [new_id("job") for _ in priced]
        params = {
            "project_id": project_id,
            "created_by": principal.id,
            "max_attempts": self.policy.max_attempts,
            "batch_id": batch_id,
            "traceparent": current_traceparent(),
            "ids": job_ids,
            "job_type_ids": [p.job_type.id for p in priced],
            "input_params": [Jsonb(p.spec.input_params) for p in priced],
            "target_collection_ids": [p.spec.target_collection_id or p.job_type.id for p in priced],
            "source_item_ids": [Jsonb([s.id for s in p.sources]) for p in priced],
            "credits_reserved": [p.credits for p in priced],
            "messages": [
                f"created; {p.credits} credits reserved ({p.area:.3f} km², {p.assets} assets)" for p in priced
            ],
        }
        rows = await (await tx.execute(Q.insert_batch_jobs, params)).fetchall()
        # RETURNING promises no order: the jobs are put back in request order by id.
        created = {r["id"]: JobRecord.from_row(r) for r in rows}
        jobs = [created[job_id] for job_id in job_ids]
        if not dispatch:
            await self._record_events(tx, [(job, "created") for job in jobs])
            return jobs
        messages = [queued_message(p.job_type) for p in priced]
        rows = await (
            await tx.execute(Q.dispatch_batch_jobs, {"ids": [j.id for j in jobs], "messages": messages})
        ).fetchall()
        dispatched = {r["id"]: JobRecord.from_row(r) for r in rows}
        events: builtins.list[tuple[JobRecord, str]] = []
        for job in jobs:
            events += [(job, "created"), (dispatched[job.id], "dispatched")]
        await self._record_events(tx, events)
        return [dispatched[job.id] for job in jobs]


def _within(
    priced: builtins.list[_Priced],
    available: int,
    all_or_nothing: bool,
    errors: builtins.list[DomainError | None],
) -> builtins.list[_Priced]:
    """The requests the balance holds: all or none (refusing the batch), or in request order while it lasts."""
    total = sum(p.credits for p in priced)
    if all_or_nothing:
        if total > available:
            raise failed_precondition(
                "INSUFFICIENT_CREDITS",
                f"the batch needs {total} credits but the project has {available} available",
                required=str(total),
                available=str(available),
            )
        return priced
    kept = []
    left = available
    for p in priced:
        if p.credits > left:
            errors[p.index] = failed_precondition(
                "INSUFFICIENT_CREDITS",
                f"the job needs {p.credits} credits but only {left} are left for it in the batch",
                required=str(p.credits),
                available=str(left),
            )
            continue
        left -= p.credits
        kept.append(p)
    return kept
