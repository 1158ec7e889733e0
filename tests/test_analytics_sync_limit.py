"""AnalyticsService.run with the synchronous pixel limit: the plan is made and checked in the
run's own thread job, before the method executes, and the run takes that plan instead of
planning again; over the limit the method never executes (RESOURCE_EXHAUSTED USE_ANALYTICS_JOB)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from geopera_kernel.analytics import AnalyticsContext, AnalyticsMethod, MethodRegistry
from geopera_kernel.server.domain.analytics import AnalyticsService, PreparedCall
from geopera_kernel.server.errors import Code, DomainError
from geopera_kernel.server.storage import LocalStorage

LIMIT = 1_000


class ProbeParams(BaseModel):
    pixels: int


class ProbeResult(BaseModel):
    planned_in: str
    executed_in: str
    plan_taken: bool


class Probe(AnalyticsMethod):
    """Says where it was planned and run, and whether its run found the plan."""

    name: ClassVar[str] = "probe_test"
    description: ClassVar[str] = "Test method: reports its plan and run."
    input_model: ClassVar[type[BaseModel]] = ProbeParams
    output_model: ClassVar[type[BaseModel]] = ProbeResult
    example: ClassVar[dict[str, Any]] = {"pixels": 1}
    executed: ClassVar[list[str]] = []

    def item_ids(self, params: Any) -> list[str]:
        return []

    def pixels_to_read(self, params: Any, ctx: AnalyticsContext) -> int:
        ctx.plans[self.name] = threading.current_thread().name
        return int(params.pixels)

    def execute(self, params: Any, ctx: AnalyticsContext) -> ProbeResult:
        here = threading.current_thread().name
        Probe.executed.append(here)
        planned = ctx.plans.pop(self.name, None)
        return ProbeResult(planned_in=planned or "", executed_in=here, plan_taken=planned is not None)


def _service(tmp_path: Path) -> tuple[AnalyticsService, MethodRegistry]:
    methods = MethodRegistry()
    methods.register(Probe)
    storage = LocalStorage(tmp_path / "storage")
    # run() reads neither the database nor the catalogue: the call comes prepared.
    service = AnalyticsService(None, storage, None, methods, sync_max_pixels=LIMIT)  # type: ignore[arg-type]
    return service, methods


def _call(methods: MethodRegistry, pixels: int) -> PreparedCall:
    params = {"pixels": pixels}
    return PreparedCall("probe_test", params, methods.validate("probe_test", params), {}, frozenset())


def test_within_the_limit_the_run_takes_the_plan_made_in_its_own_thread_job(tmp_path: Path) -> None:
    service, methods = _service(tmp_path)
    Probe.executed.clear()
    result, artifacts, _ = asyncio.run(service.run(_call(methods, LIMIT), within_sync_limit=True))
    assert result["plan_taken"] and artifacts == []
    assert result["planned_in"] == result["executed_in"] == Probe.executed[0]


def test_over_the_limit_the_method_never_executes(tmp_path: Path) -> None:
    service, methods = _service(tmp_path)
    Probe.executed.clear()
    with pytest.raises(DomainError) as refused:
        asyncio.run(service.run(_call(methods, LIMIT + 1), within_sync_limit=True))
    assert (refused.value.code, refused.value.reason) == (Code.RESOURCE_EXHAUSTED, "USE_ANALYTICS_JOB")
    assert refused.value.metadata == {"pixels_to_read": str(LIMIT + 1), "sync_max_pixels": str(LIMIT)}
    assert Probe.executed == []
    # Without the check (an analytics job's run) the same call executes, planning for itself.
    result, _, _ = asyncio.run(service.run(_call(methods, LIMIT + 1)))
    assert not result["plan_taken"] and Probe.executed
