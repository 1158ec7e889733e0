"""Credit balances and the append-only ledger.

Every change of a balance writes its ledger row in the same statement, and the
table's CHECK constraints keep both balances non-negative under any
concurrency, so `granted - captured == available + held` always holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from geopera_kernel.server import metrics
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.rows import fetch_project_row
from geopera_kernel.server.errors import failed_precondition, invalid_argument
from geopera_kernel.server.pagination import decode_page_token, page, page_size_or_default
from geopera_kernel.server.store import Database, Q
from geopera_kernel.server.store.database import after_commit


@dataclass(frozen=True)
class Balance:
    project_id: str
    available: int
    held: int
    granted_total: int
    captured_total: int


@dataclass(frozen=True)
class LedgerRow:
    id: int
    project_id: str
    job_id: str | None
    kind: str
    amount: int
    available_after: int
    held_after: int
    note: str
    create_time: datetime


class CreditService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def grant(self, project_id: str, amount: int, note: str = "") -> LedgerRow:
        if amount <= 0:
            raise invalid_argument("INVALID_AMOUNT", "a grant must be a positive whole number", field="amount")
        async with self._db.transaction() as conn:
            params = {"project_id": project_id, "amount": amount, "note": note}
            row = await fetch_project_row(conn, Q.grant_credits, params, project_id)
        return LedgerRow(**row)

    async def balance(self, principal: Principal, project_id: str) -> Balance:
        _require_project_id(project_id)
        principal.require_project(project_id)
        async with self._db.connection() as conn:
            row = await fetch_project_row(conn, Q.get_balance, {"project_id": project_id}, project_id)
        return Balance(**row)

    async def ledger(
        self, principal: Principal, project_id: str, job_id: str, page_size: int, page_token: str
    ) -> tuple[list[LedgerRow], str]:
        _require_project_id(project_id)
        principal.require_project(project_id)
        limit = page_size_or_default(page_size)
        filters = {"op": "credits.ledger.list", "project_id": project_id, "job_id": job_id}
        cursor = decode_page_token(page_token, filters)
        async with self._db.connection() as conn:
            rows = await (
                await conn.execute(
                    Q.list_ledger,
                    {
                        "project_id": project_id,
                        "job_id": job_id or None,
                        "before_id": cursor["id"] if cursor else None,
                        "limit": limit + 1,
                    },
                )
            ).fetchall()
        return page(rows, limit, lambda r: LedgerRow(**r), lambda last: {"id": last.id}, filters)

    # -- inside a caller's transaction -------------------------------------
    # A job's credits move with its state: these run in the transaction that
    # changes the job. Each locks the project's account row until commit, a
    # row every job of the project needs: callers run them last.

    async def open_account(self, tx: psycopg.AsyncConnection[Any], project_id: str) -> None:
        """The account of a project being created, at zero."""
        await tx.execute(Q.insert_credit_account, {"project_id": project_id})

    async def reserve(
        self,
        tx: psycopg.AsyncConnection[Any],
        project_id: str,
        job_id: str,
        amount: int,
        detail: dict[str, str] | None = None,
    ) -> int:
        """Hold `amount` for a new job and return the available credits after
        it; FAILED_PRECONDITION `INSUFFICIENT_CREDITS` (metadata `required`,
        `available` and `detail`, e.g. the estimate's breakdown) when the
        project has less available."""
        reserved = await (
            await tx.execute(
                Q.reserve_credits,
                {"project_id": project_id, "amount": amount, "job_id": job_id, "note": "job created"},
            )
        ).fetchone()
        if reserved is None:
            balance = await (await tx.execute(Q.get_balance, {"project_id": project_id})).fetchone()
            available = balance["available"] if balance else 0
            raise failed_precondition(
                "INSUFFICIENT_CREDITS",
                f"the job needs {amount} credits but project {project_id!r} has {available} available",
                required=str(amount),
                available=str(available),
                **(detail or {}),
            )
        credits_moved(tx, reserved=amount)
        return int(reserved["available_after"])

    async def lock_available(self, tx: psycopg.AsyncConnection[Any], project_id: str) -> int:
        """The project's available credits, its account row locked until commit
        (a batch decides which of its jobs it can hold before creating them)."""
        row = await fetch_project_row(tx, Q.lock_balance, {"project_id": project_id}, project_id)
        return int(row["available"])

    async def reserve_batch(
        self, tx: psycopg.AsyncConnection[Any], project_id: str, job_ids: list[str], amounts: list[int]
    ) -> bool:
        """Hold each new job's amount in one statement (one ledger row each);
        False, holding nothing, when the project has less than their total."""
        if not job_ids:
            return True
        params = {"project_id": project_id, "job_ids": job_ids, "amounts": amounts, "note": "job created (batch)"}
        rows = await (await tx.execute(Q.reserve_batch_credits, params)).fetchall()
        if rows:
            credits_moved(tx, reserved=sum(amounts))
        return bool(rows)

    async def capture(
        self, tx: psycopg.AsyncConnection[Any], project_id: str, job_id: str, *, held: int, actual_cost: int
    ) -> None:
        """A succeeded job's hold: its cost captured (at most the hold), the
        rest released, any excess recorded as waived."""
        captured = min(actual_cost, held)
        await self._settle(
            tx,
            project_id,
            job_id,
            captured=captured,
            released=held - captured,
            waived=actual_cost - captured,
            release_note="unspent remainder",
            waive_note=f"actual cost {actual_cost} exceeds the {captured} reserved",
        )

    async def release(
        self, tx: psycopg.AsyncConnection[Any], project_id: str, job_id: str, *, held: int, note: str
    ) -> None:
        """A job that ended without success: its whole hold back to available."""
        await self._settle(tx, project_id, job_id, captured=0, released=held, waived=0, release_note=note)

    async def _settle(
        self,
        tx: psycopg.AsyncConnection[Any],
        project_id: str,
        job_id: str,
        *,
        captured: int,
        released: int,
        waived: int,
        release_note: str,
        waive_note: str = "",
    ) -> None:
        # One statement, so the account row is locked for it and the COMMIT only.
        await tx.execute(
            Q.settle_credits,
            {
                "project_id": project_id,
                "job_id": job_id,
                "captured": captured,
                "released": released,
                "waived": waived,
                "capture_note": "job succeeded",
                "release_note": release_note,
                "waive_note": waive_note,
            },
        )
        credits_moved(tx, captured=captured, released=released, waived=waived)


def _require_project_id(project_id: str) -> None:
    if not project_id:
        raise invalid_argument("PROJECT_ID_REQUIRED", "project_id is required", field="project_id")


def credits_moved(tx: psycopg.AsyncConnection[Any], **amounts: int) -> None:
    """Counts credit movements (`geopera_credits{movement}`) once `tx` commits."""

    def count() -> None:
        for movement, amount in amounts.items():
            if amount:
                metrics.CREDITS.labels(movement).inc(amount)

    after_commit(tx, count)
