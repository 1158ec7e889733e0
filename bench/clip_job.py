"""The clip through the whole job path: a real server and worker process,
`clip.create_from_item` of the bench AOI on the 10980 x 10980 tile registered
as an item, timed from the call to the watcher seeing SUCCEEDED, with the
worker's peak RSS above its resting RSS (reset before the job through
/proc/<pid>/clear_refs).

Every run gets a fresh worker, so no measured clip follows another clip of the
same size: a `cold` run's worker clips the measured AOI first; a `warm` run's
worker first clips the warm-up AOI (small, elsewhere on the tile: what the raster
peers warm up on too). The last warm run's output is downloaded for the caller
to compare with rasterio.mask's pixels."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from shapely.geometry import mapping

from bench.harness import interleave
from bench.server import bench_server, seed_project
from geopera.v1 import catalog_pb2, kernel_pb2, processing_pb2
from tests.jobs_support import struct
from tests.support.client import KernelClient
from tests.support.workers import WorkerProcess

JOB_SUCCEEDED = 4


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _wait_connected(worker: WorkerProcess, timeout: float = 60) -> None:
    """Until the worker logged its registration (a stopped worker may still count as connected
    on the server for a while, so the job types' connected count cannot tell)."""
    deadline = time.monotonic() + timeout
    while "connected as" not in (worker.log_path.read_text() if worker.log_path.exists() else ""):
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker {worker.name} did not connect within {timeout:.0f} s")
        time.sleep(0.1)


def measure_job_path(tile: Path, aoi_lonlat: Any, warmup_lonlat: Any, runs: int, output: Path) -> dict[str, Any]:
    """`runs` cold and `runs` warm job-path clips (interleaved), each in a fresh worker;
    ``output`` receives the last warm run's COG."""
    with bench_server("bench-clip-job-", "clip") as bench:
        server, url, home = bench.server, bench.url, bench.home
        tokens = asyncio.run(seed_project(url, home, ["catalog:read", "processing:process", "processing:read"]))
        channel = server.channel()
        try:
            admin = KernelClient(channel, tokens["admin"])
            item = admin.execute(
                "items.create",
                catalog_pb2.ItemsCreateParams(
                    project_id="bench", collection_id="tiles", name="tile_20200101",
                    assets=[catalog_pb2.AssetInput(key="data", server_href=str(tile))],
                ),
                timeout=600,
            ).item  # fmt: skip
            client = KernelClient(channel, tokens["user"])
            counter = iter(range(1_000_000))

            def clip(aoi: Any) -> tuple[float, Any]:
                started = time.perf_counter()
                result = client.execute(
                    "clip.create_from_item",
                    processing_pb2.ClipCreateFromItemParams(
                        source_item_id=item.id, project_id="bench", aoi_geometry=struct(mapping(aoi)),
                        output_name=f"clip_{next(counter)}",
                    ),
                )  # fmt: skip
                events = list(client.stub.WatchJob(kernel_pb2.WatchJobRequest(job_id=result.job.id),
                                                   metadata=client.metadata(), timeout=300))  # fmt: skip
                wall = time.perf_counter() - started
                job = events[-1].job
                if job.status != JOB_SUCCEEDED:
                    raise RuntimeError(f"clip job ended {job.status}: {job.error}")
                return wall, job

            def one_run(mode: str, index: int) -> dict[str, Any]:
                worker = WorkerProcess(server.address, tokens["worker"], home, capacity=1,
                                       plugins="geopera_kernel.worker.plugins",
                                       name=f"{mode}{index}").start()  # fmt: skip
                try:
                    _wait_connected(worker)
                    assert worker.process is not None
                    pid = worker.process.pid
                    if mode == "warm":
                        clip(warmup_lonlat)
                    rest_kb = _status_kb(pid, "VmRSS")
                    _reset_peak(pid)
                    wall, job = clip(aoi_lonlat)
                    above_kb = max(0, _status_kb(pid, "VmHWM") - rest_kb)
                finally:
                    worker.stop()
                print(f"[clip] job path {mode} run {index}: {wall:.2f} s, worker peak "
                      f"{above_kb / 1024:.0f} MiB above rest", flush=True)  # fmt: skip
                return {
                    "wall": wall, "above_rest_kb": above_kb, "rest_kb": rest_kb,
                    "output_item_id": job.output_item_ids[0],
                    "dispatch_s": job.start_time.ToDatetime().timestamp() - job.create_time.ToDatetime().timestamp(),
                    "run_s": job.end_time.ToDatetime().timestamp() - job.start_time.ToDatetime().timestamp(),
                }  # fmt: skip

            measured = interleave(["cold", "warm"], runs, one_run)
            last_id = measured["warm"][-1]["output_item_id"]
            asset = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=last_id)).item.assets["data"]
            data, _ = client.download(asset.href)
            output.write_bytes(data)
            return measured
        finally:
            channel.close()
