"""Job types: what a worker declares it runs (an input schema and a cost
model), who may change a declaration, and a short-lived cache of them."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import psycopg
from psycopg.types.json import Jsonb

from geopera_kernel.raster.cost import CostModel
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.jobs.policy import LeasePolicy
from geopera_kernel.server.domain.names import JOB_TYPE_ID
from geopera_kernel.server.domain.rows import from_columns
from geopera_kernel.server.errors import ExpectedSchema, FieldViolation, invalid_argument, not_found, permission_denied
from geopera_kernel.server.store import Database, Q

JOB_TYPE_CACHE_SECONDS = 2.0


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
        return from_columns(
            cls,
            row,
            cost=CostModel(row["cost_flat"], row["cost_per_km2"], row["cost_per_asset"], row["cost_minimum"]),
            connected_workers=int(row.get("connected_workers") or 0),
        )


class JobTypes:
    """The job type table, read through a cache: types change only when a
    worker declares a new schema, and `connected_workers` is advisory."""

    def __init__(self, db: Database, policy: LeasePolicy) -> None:
        self._db = db
        self._policy = policy
        self._cache: dict[str, tuple[float, JobTypeRecord, jsonschema.protocols.Validator]] = {}

    def _query(self, job_type_id: str | None) -> dict[str, Any]:
        return {"id": job_type_id, "live_seconds": self._policy.lease_seconds}

    async def upsert(self, record: JobTypeRecord, owner_token_id: str | None = None) -> JobTypeRecord:
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
        _require_job_type_id(record.id, "job_type_id")
        self._cache.pop(record.id, None)
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
            stored = await (await conn.execute(Q.list_job_types, self._query(record.id))).fetchone()
        assert stored is not None
        return JobTypeRecord.from_row(stored)

    async def declare(self, principal: Principal, declared: list[JobTypeRecord]) -> None:
        """A worker's hello. Each type must be granted to its credential. A
        new type is registered and owned by the credential; an existing one
        may be declared again as it is by any granted credential, and changed
        only by its owner (built-in types by nobody): a change applies to jobs
        created afterwards."""
        seen: set[str] = set()
        for index, record in enumerate(declared):
            _require_job_type_id(record.id, f"hello.job_types[{index}].job_type_id")
            if record.id in seen:
                raise invalid_argument(
                    "INVALID_JOB_TYPE", f"job type {record.id!r} is declared twice", field=f"hello.job_types[{index}]"
                )
            seen.add(record.id)
            principal.require_job_type(record.id)
        for record in sorted(declared, key=lambda r: r.id):  # one lock order for concurrent hellos
            stored = await self.upsert(record, owner_token_id=principal.id)
            if _definition(stored) != _definition(record):
                owner = "the server (built in)" if stored.builtin else "another worker credential"
                raise permission_denied(
                    "JOB_TYPE_OWNED_BY_OTHER",
                    f"job type {record.id!r} is defined by {owner}; declare it exactly as processing.job_types.get "
                    "shows it, or use another job type id",
                    job_type_id=record.id,
                    owner="builtin" if stored.builtin else "other_credential",
                )

    async def all(self) -> list[JobTypeRecord]:
        async with self._db.connection() as conn:
            rows = await (await conn.execute(Q.list_job_types, self._query(None))).fetchall()
        return [JobTypeRecord.from_row(r) for r in rows]

    async def get(self, job_type_id: str, conn: psycopg.AsyncConnection[Any] | None = None) -> JobTypeRecord:
        return (await self.with_validator(job_type_id, conn))[0]

    async def with_validator(
        self, job_type_id: str, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> tuple[JobTypeRecord, jsonschema.protocols.Validator]:
        """The type and its input schema's validator; read on `conn` when the
        caller is in a transaction already."""
        if not job_type_id:
            raise invalid_argument("JOB_TYPE_REQUIRED", "job_type_id is required", field="job_type_id")
        cached = self._cache.get(job_type_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1], cached[2]
        if conn is None:
            async with self._db.connection() as own:
                rows = await (await own.execute(Q.list_job_types, self._query(job_type_id))).fetchall()
        else:
            rows = await (await conn.execute(Q.list_job_types, self._query(job_type_id))).fetchall()
        if not rows:
            raise not_found("JOB_TYPE_NOT_FOUND", f"no job type {job_type_id!r}", job_type_id=job_type_id)
        record = JobTypeRecord.from_row(rows[0])
        validator = jsonschema.Draft202012Validator(record.input_schema)
        self._cache[job_type_id] = (time.monotonic() + JOB_TYPE_CACHE_SECONDS, record, validator)
        return record, validator


def validate_input(job_type: JobTypeRecord, validator: jsonschema.protocols.Validator, params: dict[str, Any]) -> None:
    """Refuses input_params that do not match the type's input schema, by field."""
    errors = sorted(validator.iter_errors(params), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        violations = [violation for e in errors[:20] for violation in _schema_violations(e)]
        raise invalid_argument(
            "INVALID_JOB_PARAMS",
            f"input_params do not match the input schema of job type {job_type.id!r}",
            violations=violations,
            expected_schema=ExpectedSchema(job_type.id, job_type.input_schema),
        )


def _require_job_type_id(job_type_id: str, field: str) -> None:
    JOB_TYPE_ID.require(job_type_id, what="a job type id", reason="INVALID_JOB_TYPE", field=field)


def _definition(job_type: JobTypeRecord) -> tuple[object, ...]:
    """What a declaration defines (ownership decides who may change it). A declared
    `minimum` of 0 means 1 (CostModel.checked): so it does for the stored one compared."""
    cost = job_type.cost
    return (job_type.description, job_type.input_schema, dataclasses.replace(cost, minimum=max(1, cost.minimum)))


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
