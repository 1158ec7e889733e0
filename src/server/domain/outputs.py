"""RegisterOutputs: the only door through which a job's outputs become items.

The stream's files land in a scratch directory; on `commit` every asset is
validated (readable, valid COG, embedded statistics, at least one valid
pixel), copied into storage, and then ONE transaction registers the items,
their provenance edges (to the job and to every source item), captures the
credits and marks the job SUCCEEDED. Whatever fails - the stream, a
validation, the transaction - leaves nothing behind (bytes whose commit outcome
is unknown are left to the storage sweep). A retry after the commit replays the
stored response.

Outputs refused for what they are (an invalid raster, a taken name, no valid
pixel) would be refused again on every attempt, so the refusal also ends the
job FAILED with that reason in `job.error`, in the same call; a stream that
merely broke off (INCOMPLETE_UPLOAD) or a server fault leaves the attempt live.

An analytics job's stream carries its result and files instead of items: they are
received here as any asset's bytes and committed by analytics_jobs.AnswerCommit
(just over 400 lines: the receive loop is one piece for both kinds of stream).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from shapely.geometry import mapping

from geopera_kernel.raster import RasterError, RasterInfo, inspect_raster
from geopera_kernel.raster.geo import geodesic_area_km2, parse_area
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.analytics_jobs import AnswerCommit, ReceivedAnswer, RenderResult, is_analytics_job
from geopera_kernel.server.domain.catalog.items import NewItem, StoredAsset, asset_storage_key, insert_item
from geopera_kernel.server.domain.catalog.reads import CatalogLimits
from geopera_kernel.server.domain.jobs import JobError, JobRecord, JobService
from geopera_kernel.server.domain.jobs.creation import output_name_taken
from geopera_kernel.server.domain.models import ItemRecord
from geopera_kernel.server.domain.names import ASSET_KEY
from geopera_kernel.server.domain.output_parts import (
    ARTIFACT_OUTPUT_KEY,
    AnalyticsResultPart,
    OutputArtifactPart,
    OutputAssetSpec,
    OutputChunkPart,
    OutputItemPart,
    OutputPart,
)
from geopera_kernel.server.domain.output_uploads import (
    SignedUpload,
    discard_uploads,
    fetch_all,
    require_own_href,
    sign_uploads,
)
from geopera_kernel.server.domain.pending_objects import PendingObjects
from geopera_kernel.server.domain.quota import StorageQuota
from geopera_kernel.server.domain.raster_work import RasterWorkPool
from geopera_kernel.server.errors import Code, DomainError, failed_precondition, invalid_argument
from geopera_kernel.server.ids import new_id
from geopera_kernel.server.storage import BlobStorage, object_storage
from geopera_kernel.server.store import Database, Q
from geopera_kernel.server.validation import require_finite_json


@dataclass
class _ReceivingAsset:
    spec: OutputAssetSpec
    path: Path
    handle: BinaryIO
    digest: Any = field(default_factory=hashlib.sha256)
    received: int = 0
    finished: bool = False


class _LazyDir:
    """A scratch directory made only when the first file needs it (a job
    without outputs never touches the file system)."""

    def __init__(self, parent: Path, prefix: str) -> None:
        self._parent = parent
        self._prefix = prefix
        self._path: Path | None = None

    @property
    def created(self) -> bool:
        return self._path is not None

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = Path(tempfile.mkdtemp(prefix=self._prefix, dir=self._parent))
        return self._path


def _where(output_key: str, asset_key: str) -> str:
    """The field an asset's (or an analytics job's artifact's) bytes are named by."""
    if output_key == ARTIFACT_OUTPUT_KEY:
        return f"artifacts[{asset_key}]"
    return f"items[{output_key}].assets[{asset_key}]"


def _invalid(message: str, field: str) -> DomainError:
    return invalid_argument("INVALID_OUTPUT", message, field=field)


# A broken-off stream is worth sending again; every other refusal of the outputs
# themselves would repeat on any attempt, and so would a full storage quota.
_TRANSIENT_REFUSALS = frozenset({"INCOMPLETE_UPLOAD"})


def ends_the_job(err: DomainError) -> bool:
    """True when RegisterOutputs refusing the outputs with `err` fails the job."""
    if err.code == Code.RESOURCE_EXHAUSTED:
        return err.reason == "QUOTA_EXCEEDED"
    return err.code in (Code.INVALID_ARGUMENT, Code.ALREADY_EXISTS) and err.reason not in _TRANSIENT_REFUSALS


def _job_error(err: DomainError) -> JobError:
    where = err.violations[0].field if err.violations else ""
    message = f"outputs refused: {where + ': ' if where else ''}{err.message}"
    return JobError(int(err.code), err.reason, message[:1000])


class OutputService:
    def __init__(
        self,
        db: Database,
        storage: BlobStorage,
        jobs: JobService,
        limits: CatalogLimits | None = None,
        quota: StorageQuota | None = None,
        raster_pool: RasterWorkPool | None = None,
    ) -> None:
        self._db = db
        self._storage = storage
        self._jobs = jobs
        self._limits = limits or CatalogLimits()
        self._quota = quota or StorageQuota()
        self._raster_pool = raster_pool or RasterWorkPool()
        self._object_storage = object_storage(storage)

    async def sign_uploads(
        self, principal: Principal, job_id: str, targets: list[tuple[str, str]]
    ) -> list[SignedUpload]:
        """Presigned PUT URLs for the live attempt's output files (object storage only)."""
        job, replay = await self._jobs.outputs_state(principal, job_id)
        if replay is not None:
            raise failed_precondition("JOB_ATTEMPT_OVER", f"the outputs of job {job_id} are registered")
        return sign_uploads(self._object_storage, job, targets)

    async def register(
        self,
        principal: Principal,
        job_id: str,
        parts: AsyncIterator[OutputPart],
        encode: Callable[[JobRecord, list[ItemRecord]], bytes],
        render: RenderResult,
    ) -> bytes:
        """Receive, validate and commit a job's outputs (an analytics job's answer:
        `render` makes its JSON result); returns the encoded response (the stored
        one when this attempt committed before)."""
        job, replay = await self._jobs.outputs_state(principal, job_id)
        if replay is not None:
            return replay
        try:
            return await self._register(principal, job, parts, encode, render)
        except DomainError as err:
            if ends_the_job(err):
                await self._jobs.fail_attempt(principal, job_id, _job_error(err))
            raise

    async def _register(
        self,
        principal: Principal,
        job: JobRecord,
        parts: AsyncIterator[OutputPart],
        encode: Callable[[JobRecord, list[ItemRecord]], bytes],
        render: RenderResult,
    ) -> bytes:
        job_id = job.id
        scratch = _LazyDir(self._storage.scratch_dir(), f"outputs-{job_id}-")
        pending = PendingObjects(self._storage)
        try:
            received = ReceivedAnswer()
            items, files, uploaded = await self._receive(job, parts, scratch, received)
            if is_analytics_job(job):
                commit = AnswerCommit(self._jobs, self._quota, self._raster_pool, render, encode, pending)
                return await commit.run(principal, job, received, files, scratch.path)
            if uploaded:  # read back once from the bucket (size, sha256), for the raster checks below
                files |= await fetch_all(self._object_storage, uploaded, scratch.path, self._limits.max_upload_bytes)
            infos = {
                key: await self._raster_pool.run(
                    functools.partial(self._inspect, path, f"items[{key[0]}].assets[{key[1]}]")
                )
                for key, path in files.items()
            }
            prepared = []
            for item in items:
                item_id = new_id("it")
                assets = []
                for spec in item.assets:
                    storage_key = asset_storage_key(job.project_id, item_id, spec.key)
                    if spec.href and self._object_storage is not None:
                        await pending.copy(self._object_storage, storage_key, spec.href)  # no byte through here
                    else:
                        await pending.put(storage_key, files[(item.output_key, spec.key)])
                    info = infos[(item.output_key, spec.key)]
                    assets.append(StoredAsset(spec.key, spec.roles, spec.title, storage_key, info))
                prepared.append((item_id, item, assets))
            response = await self._commit(principal, job_id, prepared, encode, pending)
            if uploaded and self._object_storage is not None:
                hrefs = [spec.href for spec in uploaded.values()]
                await asyncio.to_thread(discard_uploads, self._object_storage, hrefs)
            return response
        except BaseException as error:
            await pending.settle(error)
            raise
        finally:
            if scratch.created:
                await asyncio.to_thread(shutil.rmtree, scratch.path, True)

    @staticmethod
    def _inspect(path: Path, field: str, check_cancelled: Callable[[], None]) -> RasterInfo:
        try:
            info = inspect_raster(path, require_cog=True, check_cancelled=check_cancelled)
        except RasterError as err:
            raise invalid_argument(
                err.reason,
                err.message,
                field=field,
                metadata={"findings": "; ".join(err.findings)[:1000]} if err.findings else {},
            ) from err
        if all(band.statistics is None for band in info.bands):
            # Nothing to show for the credits: the job fails and releases them.
            raise invalid_argument("EMPTY_OUTPUT", "the output raster has no valid pixel (all nodata)", field=field)
        if info.statistics_computed:
            raise invalid_argument(
                "MISSING_STATISTICS",
                "output rasters must embed their statistics (write them with STATISTICS=YES)",
                field=field,
            )
        return info

    async def _receive(
        self, job: JobRecord, parts: AsyncIterator[OutputPart], scratch: _LazyDir, received: ReceivedAnswer
    ) -> tuple[list[OutputItemPart], dict[tuple[str, str], Path], dict[tuple[str, str], OutputAssetSpec]]:
        items: list[OutputItemPart] = []
        uploaded: dict[tuple[str, str], OutputAssetSpec] = {}
        receiving: dict[tuple[str, str], _ReceivingAsset] = {}
        names: set[str] = set()
        committed = False
        try:
            async for part in parts:
                if committed:
                    raise _invalid("nothing may follow commit", "commit")
                if isinstance(part, OutputArtifactPart | AnalyticsResultPart):
                    spec = received.take(job, part)  # an artifact's bytes follow in chunks
                    if spec is not None:
                        path = scratch.path / f"artifact-{spec.key}"
                        receiving[(ARTIFACT_OUTPUT_KEY, spec.key)] = _ReceivingAsset(spec, path, path.open("wb"))
                elif isinstance(part, OutputItemPart):
                    if is_analytics_job(job):
                        raise _invalid("an analytics job registers no item: it answers a result", "item")
                    index = len(items)
                    await asyncio.to_thread(self._check_item, job, part, index, names)  # parses a geometry
                    await self._check_name_free(job, part.name)
                    items.append(part)
                    for spec in part.assets:
                        if spec.href:  # already in the bucket: no chunk follows
                            where = f"items[{index}].assets[{spec.key}]"
                            require_own_href(self._object_storage, job, part.output_key, spec, where)
                            uploaded[(part.output_key, spec.key)] = spec
                            continue
                        path = scratch.path / f"{index}-{spec.key}.tif"
                        receiving[(part.output_key, spec.key)] = _ReceivingAsset(spec, path, path.open("wb"))
                elif isinstance(part, OutputChunkPart):
                    target = receiving.get((part.output_key, part.asset_key))
                    if target is None:
                        raise _invalid(
                            f"chunk for undeclared asset {part.output_key}/{part.asset_key}", "chunk.asset_key"
                        )
                    await self._write_chunk(target, part)
                else:
                    committed = True
        finally:
            for target in receiving.values():
                target.handle.close()
        if not committed:
            raise invalid_argument(
                "INCOMPLETE_UPLOAD", "the stream ended without commit; nothing was registered", field="commit"
            )
        for (output_key, asset_key), target in receiving.items():
            where = _where(output_key, asset_key)
            if not target.finished:
                raise invalid_argument("INCOMPLETE_UPLOAD", "asset bytes ended without finish_write", field=where)
            if target.spec.size_bytes and target.spec.size_bytes != target.received:
                raise invalid_argument(
                    "INCOMPLETE_UPLOAD",
                    f"received {target.received} bytes, declared {target.spec.size_bytes}",
                    field=where,
                )
            if target.spec.sha256 and target.spec.sha256.lower() != target.digest.hexdigest():
                raise invalid_argument("INCOMPLETE_UPLOAD", "bytes do not match the declared sha256", field=where)
        return items, {key: target.path for key, target in receiving.items()}, uploaded

    def _check_item(self, job: JobRecord, part: OutputItemPart, index: int, names: set[str]) -> None:
        where = f"items[{index}]"
        if not part.output_key:
            raise _invalid("output_key is required", f"{where}.output_key")
        if not part.name or len(part.name) > 200 or "/" in part.name:
            raise _invalid("name must be 1-200 characters without '/'", f"{where}.name")
        if part.name in names:
            raise _invalid(f"two outputs are named {part.name!r}", f"{where}.name")
        names.add(part.name)
        parse_area(part.geometry, f"{where}.geometry")
        require_finite_json(part.properties, f"{where}.properties")
        foreign = sorted(set(part.source_item_ids) - set(job.source_item_ids))
        if foreign:
            raise _invalid(f"{foreign} are not source items of job {job.id}", f"{where}.source_item_ids")
        if not part.assets:
            raise _invalid("an output item needs at least one asset", f"{where}.assets")
        keys = [a.key for a in part.assets]
        if len(set(keys)) != len(keys) or not all(ASSET_KEY.matches(k) for k in keys):
            raise _invalid("asset keys must be unique lower-case identifiers", f"{where}.assets")

    async def _check_name_free(self, job: JobRecord, name: str) -> None:
        """Before any byte is received (the commit's unique key still decides races)."""
        async with self._db.connection() as conn:
            taken = await (
                await conn.execute(
                    Q.item_name_taken,
                    {"project_id": job.project_id, "collection_id": job.target_collection_id, "name": name},
                )
            ).fetchone()
        if taken is not None:
            raise output_name_taken(job.target_collection_id, name)

    async def _write_chunk(self, target: _ReceivingAsset, part: OutputChunkPart) -> None:
        where = _where(part.output_key, part.asset_key)
        if target.finished:
            raise invalid_argument("INVALID_WRITE_OFFSET", "data after finish_write", field=where)
        if part.write_offset != target.received:
            raise invalid_argument(
                "INVALID_WRITE_OFFSET",
                f"write_offset {part.write_offset} but {target.received} bytes were received",
                field=where,
            )
        if len(part.data) > self._limits.max_chunk_bytes:
            raise invalid_argument("CHUNK_TOO_LARGE", "chunks are at most 4 MiB", field=where)
        target.received += len(part.data)
        if target.received > self._limits.max_upload_bytes:
            raise invalid_argument("UPLOAD_TOO_LARGE", "output asset exceeds the upload limit", field=where)
        if part.data:
            target.digest.update(part.data)
            await asyncio.to_thread(target.handle.write, part.data)
        target.finished = part.finish_write

    async def _commit(
        self,
        principal: Principal,
        job_id: str,
        prepared: list[tuple[str, OutputItemPart, list[StoredAsset]]],
        encode: Callable[[JobRecord, list[ItemRecord]], bytes],
        pending: PendingObjects,
    ) -> bytes:
        async with self._jobs.committing_outputs(principal, job_id, pending.probe) as (tx, job):
            job_type = await self._jobs.job_type(job.job_type_id, tx)
            sources = {}
            for source_id in job.source_item_ids:
                row = await (await tx.execute(Q.get_item, {"id": source_id})).fetchone()
                if row is not None:
                    sources[source_id] = ItemRecord.from_row(row)
            records = []
            areas = []
            for item_id, part, assets in prepared:
                area = await asyncio.to_thread(parse_area, part.geometry, "geometry")
                areas.append(area)
                derived_from = part.source_item_ids or job.source_item_ids
                when = part.datetime or (sources[derived_from[0]].datetime if derived_from else job.create_time)
                new_item = NewItem(
                    id=item_id,
                    project_id=job.project_id,
                    collection_id=job.target_collection_id,
                    name=part.name,
                    geometry=mapping(area),
                    bbox=area.bounds,
                    datetime=when,
                    properties=part.properties,
                    job_id=job.id,
                )
                try:
                    record = await insert_item(tx, new_item, assets)
                except DomainError as err:
                    if err.reason != "ITEM_NAME_TAKEN":
                        raise
                    # Taken since the check on receipt: same refusal, same reason.
                    raise output_name_taken(job.target_collection_id, part.name) from err
                await tx.execute(
                    Q.insert_provenance_edge,
                    {"output_item_id": item_id, "relation": "generated_by", "job_id": job.id, "source_item_id": None},
                )
                for source_id in derived_from:
                    await tx.execute(
                        Q.insert_provenance_edge,
                        {
                            "output_item_id": item_id,
                            "relation": "derived_from",
                            "job_id": job.id,
                            "source_item_id": source_id,
                        },
                    )
                row = await (await tx.execute(Q.get_item, {"id": record.id})).fetchone()
                assert row is not None
                records.append(ItemRecord.from_row(row))
            area_km2 = sum(geodesic_area_km2(a) for a in areas)
            actual = job_type.cost.actual(area_km2, sum(len(a) for _, _, a in prepared))
            finished = await self._jobs.succeed(tx, job, actual_cost=actual, output_item_ids=[r.id for r in records])
            response = encode(finished, records)
            await self._jobs.store_response(tx, job.id, response)
            # Last, the two rows this project's other jobs wait for: each stays
            # locked until the commit. A commit without outputs adds no byte, so
            # it cannot take the project over its quota and skips that lock.
            if prepared:
                await self._quota.check(tx, job.project_id)
            await self._jobs.settle_success(tx, job, actual_cost=actual)
        return response
