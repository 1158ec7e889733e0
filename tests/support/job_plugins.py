"""Job types for the test suite and the bench only (never shipped): a worker
started by a test loads them with `--plugins tests.support.job_plugins`."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from geopera_kernel.raster import RasterError, write_cog
from geopera_kernel.worker.plugin import CostModel, JobContext, JobFailed, JobOutput, JobPlugin, OutputFile

SQUARE = {"type": "Polygon", "coordinates": [[[14.55, 45.86], [14.56, 45.86], [14.56, 45.87], [14.55, 45.87],
                                              [14.55, 45.86]]]}  # fmt: skip


class NoopInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", description="ignored")


class NoopPlugin(JobPlugin):
    job_type_id: ClassVar[str] = "test_noop"
    description: ClassVar[str] = "Does nothing and registers no output (tests, bench)."
    input_model: ClassVar[type[BaseModel]] = NoopInput
    cost_model: ClassVar[CostModel] = CostModel(flat=1, minimum=1)

    def run(self, params: BaseModel, ctx: JobContext) -> list[JobOutput]:
        return []


class CogInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="output item name")
    source_item_ids: list[str] = Field(default_factory=list, description="items the output derives from")
    steps: int = Field(3, ge=1, le=1000, description="progress steps")
    step_seconds: float = Field(0.0, ge=0, le=60, description="sleep per step (cancellable)")
    value: int = Field(7, description="pixel value written")


class CogPlugin(JobPlugin):
    job_type_id: ClassVar[str] = "test_cog"
    description: ClassVar[str] = "Writes a small COG as one output item, reporting progress per step."
    input_model: ClassVar[type[BaseModel]] = CogInput
    cost_model: ClassVar[CostModel] = CostModel(flat=2, per_asset=1, minimum=1)

    def run(self, params: BaseModel, ctx: JobContext) -> list[JobOutput]:
        assert isinstance(params, CogInput)
        for step in range(params.steps):
            ctx.check_cancelled()
            time.sleep(params.step_seconds)
            ctx.report_progress((step + 1) / params.steps, f"step {step + 1} of {params.steps}")
        ctx.check_cancelled()
        path = ctx.workdir / "out.tif"
        data = np.full((1, 64, 64), params.value, dtype=np.uint8)
        write_cog(path, data, crs="EPSG:4326", transform=(0.01 / 64, 0, 14.55, 0, -0.01 / 64, 45.87), nodata=0,
                  descriptions=["value"])  # fmt: skip
        sources = [ctx.sources[i] for i in params.source_item_ids if i in ctx.sources]
        when = sources[0].datetime if sources else datetime(2020, 1, 1, tzinfo=UTC)
        return [JobOutput(name=params.name, geometry=SQUARE, datetime=when, files=[OutputFile("data", path)],
                          properties={"test:value": params.value}, source_item_ids=params.source_item_ids)]  # fmt: skip


class FailInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("TEST_FAILURE", description="failure reason")
    message: str = Field("failed on purpose", description="failure message")
    retryable: bool = Field(False, description="ask for another attempt")
    succeed_from_attempt: int = Field(0, ge=0, description="succeed (no output) from this attempt on; 0 = never")
    crash: bool = Field(False, description="raise an unexpected exception instead of JobFailed")
    raster_error: str = Field("", description="raise a RasterError with this reason instead of JobFailed")


class FailPlugin(JobPlugin):
    job_type_id: ClassVar[str] = "test_fail"
    description: ClassVar[str] = "Fails on demand (tests)."
    input_model: ClassVar[type[BaseModel]] = FailInput
    cost_model: ClassVar[CostModel] = CostModel(flat=3, minimum=1)

    def run(self, params: BaseModel, ctx: JobContext) -> list[JobOutput]:
        assert isinstance(params, FailInput)
        if params.succeed_from_attempt and ctx.attempt >= params.succeed_from_attempt:
            return []
        if params.crash:
            raise RuntimeError(params.message)
        if params.raster_error:
            raise RasterError(params.raster_error, params.message)
        raise JobFailed(params.reason, params.message, retryable=params.retryable)


class LogInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lines: int = Field(3, ge=0, le=100_000, description="INFO records `line i` (field `index`: i)")
    line_bytes: int = Field(0, ge=0, le=4000, description="pad each line's message to this many characters")
    fail: bool = Field(False, description="log an ERROR, then fail with LOG_FAILURE")
    step_seconds: float = Field(0.0, ge=0, le=60, description="sleep after each line")


class LogPlugin(JobPlugin):
    """Logs through the standard `logging` module, as a plugin would (tests of job logs)."""

    job_type_id: ClassVar[str] = "test_log"
    description: ClassVar[str] = "Logs records through `logging`, then succeeds or fails (tests)."
    input_model: ClassVar[type[BaseModel]] = LogInput
    cost_model: ClassVar[CostModel] = CostModel(flat=1, minimum=1)

    def run(self, params: BaseModel, ctx: JobContext) -> list[JobOutput]:
        assert isinstance(params, LogInput)
        plugin_log = logging.getLogger("tests.plugin.log")
        plugin_log.debug("debug detail")  # below the worker's INFO level: never reaches the job
        for index in range(params.lines):
            plugin_log.info(f"line {index}".ljust(params.line_bytes, "."), extra={"index": index, "job": ctx.job_id})
            time.sleep(params.step_seconds)
        plugin_log.warning("attempt %d almost done", ctx.attempt, extra={"attempt_seen": ctx.attempt})
        if params.fail:
            plugin_log.error("the water mask is empty", extra={"tile": "33TVM"})
            raise JobFailed("LOG_FAILURE", "nothing to map")
        return []


PLUGINS: list[Any] = [NoopPlugin, CogPlugin, FailPlugin, LogPlugin]
