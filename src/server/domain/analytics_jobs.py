"""analytics.submit: an analytics call run as a job of the built-in type
`analytics` on a worker, with no synchronous pixel limit; and the commit of
such a job's answer (RegisterOutputs) into the job's artifacts.

The call is checked here as analytics.execute checks it (AnalyticsService.prepare:
params, method, the caller's access to every item), then the job is created
DISPATCHED, its sources the items the method reads. A worker runs it with the
same engine and method registry (geopera_kernel.worker.plugins.analytics),
reading the sources with its job token, and sends back the method's result and
files. The server stores the files, renders the JSON the synchronous call
answers for that result (the projection's `render`) and stores it first, all
with the job's success in one transaction: the answer is the synchronous one.
Analytics are not a spend (the product docs: processing jobs reserve credits,
analytics computes over existing items), so these jobs hold and charge 0.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from geopera_kernel.analytics import Artifact
from geopera_kernel.raster import RasterError, inspect_raster
from geopera_kernel.raster.job_types import ANALYTICS
from geopera_kernel.server import metrics
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.analytics import (
    AnalyticsOutcome,
    AnalyticsService,
    insert_artifacts,
    move_artifacts,
    stored_artifact,
)
from geopera_kernel.server.domain.call_commit import PLAIN_COMMIT, CallCommit
from geopera_kernel.server.domain.jobs import JobRecord, JobService
from geopera_kernel.server.domain.jobs.creation import require_input_size
from geopera_kernel.server.domain.models import ItemRecord
from geopera_kernel.server.domain.names import ASSET_KEY
from geopera_kernel.server.domain.output_parts import (
    ARTIFACT_OUTPUT_KEY,
    AnalyticsResultPart,
    OutputArtifactPart,
    OutputAssetSpec,
)
from geopera_kernel.server.domain.pending_objects import PendingObjects
from geopera_kernel.server.domain.quota import StorageQuota
from geopera_kernel.server.domain.raster_work import RasterWorkPool
from geopera_kernel.server.errors import invalid_argument
from geopera_kernel.server.store import Database, Q
from geopera_kernel.server.validation import require_finite_json

RESULT_KEY = "result"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A JSON file is parsed whole to be checked: bounded, as no method writes one near it.
MAX_JSON_ARTIFACT_BYTES = 64 << 20
MAX_TITLE_CHARS = 500

# The JSON answer of the synchronous call for an outcome (the projection renders it).
RenderResult = Callable[[AnalyticsOutcome], bytes]
# The encoded RegisterOutputs response for the finished job (no items).
EncodeResponse = Callable[[JobRecord, list[ItemRecord]], bytes]


class AnalyticsJobs:
    def __init__(self, db: Database, jobs: JobService, analytics: AnalyticsService) -> None:
        self._db = db
        self._jobs = jobs
        self._analytics = analytics

    async def submit(
        self,
        principal: Principal,
        project_id: str,
        name: str,
        params: dict[str, Any],
        *,
        commit: CallCommit[JobRecord] = PLAIN_COMMIT,
    ) -> JobRecord:
        """Check the call as analytics.execute does and create the job DISPATCHED;
        with `commit.validate_only`, the job as it would be (empty id)."""
        if not project_id:
            raise invalid_argument("PROJECT_ID_REQUIRED", "project_id is required", field="project_id")
        principal.require_project(project_id)
        call = await self._analytics.prepare(principal, name, params)
        # Stored as the job's input (JSON): no infinity or NaN, and no larger than any job's.
        require_finite_json(params, "params")
        require_input_size(params)
        for other in sorted(call.projects - {project_id}):
            raise invalid_argument(
                "SOURCE_IN_OTHER_PROJECT",
                f"the params name items of project {other!r}, not {project_id!r}",
                field="params",
            )
        async with commit.transaction(self._db, project_id) as tx:
            job = await self._jobs.create_builtin_dispatched(
                tx, principal, project_id=project_id, job_type_id=ANALYTICS.id,
                input_params={"operation": call.name, "params": params}, source_item_ids=list(call.items),
            )  # fmt: skip
            await commit.finish(tx, job)
        if commit.validate_only:
            return replace(job, id="")
        return job


def is_analytics_job(job: JobRecord) -> bool:
    return job.job_type_id == ANALYTICS.id


def _media_kind(media_type: str) -> str | None:
    """'json', 'png' or 'geotiff' for the media types an artifact may have, else None:
    artifacts are served with their media type, so nothing a browser would run."""
    parts = [part.strip().lower() for part in media_type.split(";")]
    if parts == ["application/json"]:
        return "json"
    if parts == ["image/png"]:
        return "png"
    if parts[0] == "image/tiff" and "application=geotiff" in parts[1:]:
        return "geotiff"
    return None


@dataclass
class ReceivedAnswer:
    """What an analytics job's RegisterOutputs stream carries besides chunks: its
    result and its files' declarations, checked on receipt."""

    artifacts: list[OutputArtifactPart] = field(default_factory=list)
    answer: AnalyticsResultPart | None = None

    def take(self, job: JobRecord, part: OutputArtifactPart | AnalyticsResultPart) -> OutputAssetSpec | None:
        """Check a part; for an artifact, the spec its chunks are received against."""
        if not is_analytics_job(job):
            what = "artifact" if isinstance(part, OutputArtifactPart) else "analytics_result"
            raise invalid_argument("INVALID_OUTPUT", f"only an analytics job sends {what}", field=what)
        if isinstance(part, AnalyticsResultPart):
            self._take_answer(job, part)
            return None
        keys = {artifact.key for artifact in self.artifacts}
        if not ASSET_KEY.matches(part.key) or part.key == RESULT_KEY or part.key in keys:
            raise invalid_argument(
                "INVALID_OUTPUT",
                f"artifact keys are unique lower-case identifiers other than {RESULT_KEY!r}",
                field="artifact.key",
            )
        if _media_kind(part.media_type) is None:
            raise invalid_argument(
                "INVALID_OUTPUT",
                f"artifact {part.key}: media type {part.media_type[:100]!r} is not application/json, image/png "
                "or a GeoTIFF",
                field="artifact.media_type",
            )
        if len(part.title) > MAX_TITLE_CHARS:
            raise invalid_argument(
                "INVALID_OUTPUT", f"artifact titles are at most {MAX_TITLE_CHARS} characters", field="artifact.title"
            )
        self.artifacts.append(part)
        return OutputAssetSpec(part.key, [], part.title, part.size_bytes, part.sha256)

    def _take_answer(self, job: JobRecord, answer: AnalyticsResultPart) -> None:
        if self.answer is not None:
            raise invalid_argument("INVALID_OUTPUT", "an analytics job answers one result", field="analytics_result")
        operation = job.input_params.get("operation")
        if answer.operation != operation:
            raise invalid_argument(
                "INVALID_OUTPUT",
                f"the result is of {answer.operation[:100]!r}, the job runs {operation!r}",
                field="analytics_result.operation",
            )
        require_finite_json(answer.result, "analytics_result.result")
        self.answer = answer


def check_artifact_file(path: Path, media_type: str, field: str, check_cancelled: Callable[[], None]) -> None:
    """In a thread, before storing: the bytes are what the media type says."""
    kind = _media_kind(media_type)
    if kind == "geotiff":
        try:
            inspect_raster(path, require_cog=True, check_cancelled=check_cancelled)
        except RasterError as err:
            raise invalid_argument(err.reason, err.message, field=field) from err
        return
    if kind == "png":
        with path.open("rb") as file:
            valid = file.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    elif path.stat().st_size > MAX_JSON_ARTIFACT_BYTES:
        limit = f"a JSON artifact is at most {MAX_JSON_ARTIFACT_BYTES} bytes"
        raise invalid_argument("INVALID_OUTPUT", limit, field=field)
    else:
        try:
            json.loads(path.read_bytes())
            valid = True
        except ValueError:
            valid = False
    if not valid:
        raise invalid_argument("INVALID_OUTPUT", f"the bytes are not {media_type}", field=field)


@dataclass
class AnswerCommit:
    """The commit of an analytics job's answer (OutputService hands it the received files)."""

    jobs: JobService
    quota: StorageQuota
    raster_pool: RasterWorkPool
    render: RenderResult
    encode: EncodeResponse
    pending: PendingObjects

    async def run(
        self,
        principal: Principal,
        job: JobRecord,
        received: ReceivedAnswer,
        files: dict[tuple[str, str], Path],
        scratch: Path,
    ) -> bytes:
        """The files checked, then stored, then the JSON result naming them, all the
        job's artifacts with its success in one transaction; the encoded response."""
        answer = received.answer
        if answer is None:
            raise invalid_argument(
                "INVALID_OUTPUT", "an analytics job commits with its analytics_result", field="analytics_result"
            )
        artifacts = []
        for part in received.artifacts:
            path = files[(ARTIFACT_OUTPUT_KEY, part.key)]
            await self.raster_pool.run(functools.partial(check_artifact_file, path, part.media_type,
                                                         f"artifacts[{part.key}]"))  # fmt: skip
            artifacts.append(Artifact(part.key, path, part.media_type, part.title))
        project_id = job.project_id
        moved = await asyncio.to_thread(move_artifacts, self.pending, project_id, artifacts)
        stored = [stored_artifact(row) for row in moved]
        body = self.render(AnalyticsOutcome(answer.operation, answer.result, stored))
        result_file = scratch / "result.json"
        await asyncio.to_thread(result_file.write_bytes, body)
        result = Artifact(RESULT_KEY, result_file, "application/json", f"{answer.operation} result")
        result_rows = await asyncio.to_thread(move_artifacts, self.pending, project_id, [result])
        async with self.jobs.committing_outputs(principal, job.id, self.pending.probe) as (tx, locked):
            row = await (await tx.execute(Q.get_job, {"id": job.id})).fetchone()
            created_by = row["created_by"] if row is not None else ""
            rows = await insert_artifacts(tx, result_rows + moved, project_id, answer.operation, created_by, job.id)
            finished = await self.jobs.succeed_with_artifacts(tx, locked, [asdict(a) for a in rows])
            response = self.encode(finished, [])
            await self.jobs.store_response(tx, job.id, response)
            await self.quota.check(tx, project_id)
            await self.jobs.settle_success(tx, locked, actual_cost=0)
        count_answer(job, finished, answer)
        return response


def count_answer(job: JobRecord, finished: JobRecord, answer: AnalyticsResultPart) -> None:
    """An answer a worker computed counts in the analytics metrics like a call the
    server ran: the pixels the answer reports, the seconds from the attempt's start
    to its commit."""
    reported = answer.result.get("pixels_read")
    pixels = 0
    if isinstance(reported, int | float) and not isinstance(reported, bool) and math.isfinite(reported):
        pixels = int(reported)
    started, ended = job.start_time, finished.end_time
    seconds = (ended - started).total_seconds() if started is not None and ended is not None else 0.0
    metrics.analytics_ran(answer.operation, pixels, max(seconds, 0.0))
