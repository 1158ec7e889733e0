"""The clip through the whole job path: a real server and worker process,
`clip.create_from_item` of the bench AOI on the 10980 x 10980 tile registered
as an item, timed from the call to the watcher seeing SUCCEEDED, with the
worker's peak RSS above its resting RSS (reset before each job through
/proc/<pid>/clear_refs)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from shapely.geometry import mapping

from bench.server import bench_server, seed_project
from geopera.v1 import catalog_pb2, kernel_pb2, processing_pb2
from tests.jobs_support import struct, wait_for_job_type
from tests.support.client import KernelClient
from tests.support.workers import WorkerProcess

REPEATS = 5


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def measure_job_path(tile: Path, aoi_lonlat: Any, repeats: int = REPEATS) -> dict[str, Any]:
    worker = None
    with bench_server("bench-clip-job-", "clip") as bench:
        try:
            server, url, home = bench.server, bench.url, bench.home
            tokens = asyncio.run(seed_project(url, home, ["catalog:read", "processing:process", "processing:read"]))
            channel = server.channel()
            admin = KernelClient(channel, tokens["admin"])
            item = admin.execute(
                "items.create",
                catalog_pb2.ItemsCreateParams(
                    project_id="bench", collection_id="tiles", name="tile_20200101",
                    assets=[catalog_pb2.AssetInput(key="data", server_href=str(tile))],
                ),
                timeout=600,
            ).item  # fmt: skip
            worker = WorkerProcess(server.address, tokens["worker"], home, capacity=1, plugins="worker.plugins").start()
            client = KernelClient(channel, tokens["user"])

            class _World:  # wait_for_job_type only needs a client named "alpha"
                def client(self, _name: str) -> KernelClient:
                    return client

            wait_for_job_type(_World(), "clip")  # type: ignore[arg-type]
            assert worker.process is not None
            pid = worker.process.pid
            aoi = struct(mapping(aoi_lonlat))
            runs = []
            for index in range(repeats + 1):  # the first run warms the worker up
                rest_kb = _status_kb(pid, "VmRSS")
                _reset_peak(pid)
                started = time.perf_counter()
                result = client.execute(
                    "clip.create_from_item",
                    processing_pb2.ClipCreateFromItemParams(
                        source_item_id=item.id, project_id="bench", aoi_geometry=aoi, output_name=f"clip_{index}"
                    ),
                )
                events = list(client.stub.WatchJob(kernel_pb2.WatchJobRequest(job_id=result.job.id),
                                                   metadata=client.metadata(), timeout=300))  # fmt: skip
                wall = time.perf_counter() - started
                job = events[-1].job
                if job.status != 4:  # JOB_STATUS_SUCCEEDED
                    raise RuntimeError(f"clip job ended {job.status}: {job.error}")
                peak_kb = _status_kb(pid, "VmHWM")
                output = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=job.output_item_ids[0])).item
                stages = {
                    "dispatch_s": job.start_time.ToDatetime().timestamp() - job.create_time.ToDatetime().timestamp(),
                    "run_s": job.end_time.ToDatetime().timestamp() - job.start_time.ToDatetime().timestamp(),
                }
                if index:
                    runs.append({"wall": wall, "above_rest_kb": max(0, peak_kb - rest_kb), "rest_kb": rest_kb,
                                 "output_bytes": output.assets["data"].size_bytes, **stages})  # fmt: skip
                print(f"[clip] job path run {index}: {wall:.2f} s, worker peak "
                      f"{max(0, peak_kb - rest_kb) / 1024:.0f} MiB above rest", flush=True)  # fmt: skip
            channel.close()
            return {
                "wall": statistics.median(r["wall"] for r in runs),
                "best": min(r["wall"] for r in runs),
                "above_rest_kb": max(r["above_rest_kb"] for r in runs),
                "rest_kb": statistics.median(r["rest_kb"] for r in runs),
                "dispatch_s": statistics.median(r["dispatch_s"] for r in runs),
                "run_s": statistics.median(r["run_s"] for r in runs),
                "runs": json.loads(json.dumps(runs)),
            }
        finally:
            if worker is not None:
                worker.stop()
