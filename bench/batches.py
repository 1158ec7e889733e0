"""Job batches: `processing.create_batch` of 1,000 jobs (target < 2 s), and
one `WatchJobs` stream following a dispatched 1,000-job batch to the end,
every event of every job delivered (counted and checked per job).

Processes besides this driver: `geopera serve` on a fresh database (default
settings) and four worker processes (test plugins) that run the no-op jobs.
The driver is the client (grpc, blocking): creation is timed around the
Execute call, the watch from the batch's creation to its last terminal event.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2

from bench.harness import Options, Outcome, Spread
from bench.jobs import PROJECT, seed, wait_for_workers
from bench.results import Results, machine_line, markdown_table, utc_now
from bench.server import bench_server
from geopera.v1 import kernel_pb2, kernel_pb2_grpc, processing_pb2
from tests.support.workers import WorkerProcess

NAME = "batches"
TITLE = "Job batches: create_batch of 1,000 jobs, WatchJobs over 1,000 jobs"
BATCH = 1000
WORKERS, WORKER_CAPACITY = 4, 8
TARGET_CREATE_S = 2.0


def _create(stub: Any, token: str, *, dispatch: bool) -> tuple[float, processing_pb2.ProcessingCreateBatchResult]:
    params = processing_pb2.ProcessingCreateBatchParams(project_id=PROJECT, all_or_nothing=True, dispatch=dispatch)
    for i in range(BATCH):
        params.requests.add(job_type_id="test_noop").input_params.update({"note": f"bench {i}"})
    packed = any_pb2.Any()
    packed.Pack(params)
    request = kernel_pb2.ExecuteRequest(operation="processing.create_batch", params=packed)
    began = time.perf_counter()
    response = stub.Execute(request, metadata=[("authorization", f"Bearer {token}")], timeout=120)
    elapsed = time.perf_counter() - began
    result = processing_pb2.ProcessingCreateBatchResult()
    response.result.Unpack(result)
    return elapsed, result


def _cancel_all(stub: Any, token: str, job_ids: list[str]) -> None:
    """Release the holds of the created-only batches (so the credits never run out)."""
    for job_id in job_ids:
        packed = any_pb2.Any()
        packed.Pack(processing_pb2.ProcessingJobsCancelParams(job_id=job_id))
        request = kernel_pb2.ExecuteRequest(operation="processing.jobs.cancel", params=packed)
        stub.Execute(request, metadata=[("authorization", f"Bearer {token}")], timeout=30)


def _watch(stub: Any, token: str) -> dict[str, Any]:
    """A dispatched batch followed by one WatchJobs stream from each job's
    sequence 1 (`created`): every later event, checked contiguous per job."""
    began = time.perf_counter()
    _, batch = _create(stub, token, dispatch=True)
    ids = [job.id for job in batch.jobs]
    request = kernel_pb2.WatchJobsRequest(batch_id=batch.batch_id, after_sequences={i: 1 for i in ids})
    last: dict[str, int] = dict.fromkeys(ids, 1)
    final: dict[str, int] = {}
    gaps = events = 0
    for event in stub.WatchJobs(request, metadata=[("authorization", f"Bearer {token}")], timeout=600):
        events += 1
        job_id = event.job.id
        if event.sequence != last[job_id] + 1:
            gaps += 1
        last[job_id] = event.sequence
        if event.job.status in (4, 5, 6):  # SUCCEEDED, FAILED, CANCELLED
            final[job_id] = event.sequence
    elapsed = time.perf_counter() - began
    expected = sum(s - 1 for s in final.values())
    return {"seconds": elapsed, "events": events, "expected": expected, "ended": len(final), "gaps": gaps}


def run(results: Results, options: Options) -> Outcome:
    started, machine = utc_now(), machine_line()
    workers: list[WorkerProcess] = []
    with bench_server("geopera-bench-batches-", NAME) as bench:
        try:
            server = bench.server
            tokens = asyncio.run(seed(bench.url, bench.home))
            token = tokens["user"]
            with grpc.insecure_channel(server.address, options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
                stub = kernel_pb2_grpc.KernelServiceStub(ch)
                # First: the workers declare the test job types (created-only jobs stay PENDING).
                print(f"[{NAME}] starting {WORKERS} workers", flush=True)
                workers = [
                    WorkerProcess(server.address, tokens["worker"], Path(bench.tmp) / "workers",
                                  capacity=WORKER_CAPACITY, name=f"bench-w{i}", grace=5.0).start()
                    for i in range(WORKERS)
                ]  # fmt: skip
                wait_for_workers(server.address, token, WORKERS)
                print(f"[{NAME}] create_batch of {BATCH} jobs x {options.runs + 1} (first is warm-up)", flush=True)
                times: list[float] = []
                for run_index in range(options.runs + 1):
                    elapsed, result = _create(stub, token, dispatch=False)
                    if result.created_count != BATCH:
                        raise RuntimeError(f"the batch created {result.created_count} jobs, not {BATCH}")
                    if run_index:
                        times.append(elapsed)
                    print(f"[{NAME}]   {elapsed:.3f} s", flush=True)
                    _cancel_all(stub, token, [j.id for j in result.jobs])
                print(f"[{NAME}] WatchJobs over a dispatched batch of {BATCH} jobs", flush=True)
                watch = _watch(stub, token)
                print(f"[{NAME}]   {watch}", flush=True)
        finally:
            for worker in workers:
                worker.stop()
    spread = Spread.of(times)
    every = watch["events"] == watch["expected"] and watch["ended"] == BATCH and not watch["gaps"]
    met = statistics.median(times) < TARGET_CREATE_S and every
    body = "\n".join(
        [
            f"Run {started}; {machine}. One client (grpc, blocking) on the bench project; `test_noop` jobs "
            f"(1 credit each), `all_or_nothing`. {WORKERS} worker processes x {WORKER_CAPACITY} slots run the "
            "watched batch.",
            "",
            markdown_table(
                ["measure", "value", "target"],
                [
                    [
                        f"create_batch of {BATCH} jobs (s, median [min–max] of {len(times)} runs)",
                        spread.fmt(".3f"),
                        f"< {TARGET_CREATE_S:g} s",
                    ],
                    [
                        f"WatchJobs over {BATCH} dispatched jobs: events delivered",
                        str(watch["events"]),
                        f"every event: {watch['expected']}",
                    ],
                    ["jobs whose terminal event arrived", str(watch["ended"]), str(BATCH)],
                    ["per-job sequence gaps", str(watch["gaps"]), "0"],
                    [
                        "from creation to the last terminal event (s)",
                        f"{watch['seconds']:.2f}",
                        "(bounded by the workers)",
                    ],
                ],
            ),
        ]
    )
    results.set_section(TITLE, body)
    summary = (
        f"create_batch({BATCH}) {spread.fmt('.3f')} s; WatchJobs {watch['events']}/{watch['expected']} events, "
        f"{watch['ended']} ended, {watch['seconds']:.1f} s"
    )
    return Outcome(NAME, valid=every, target_met=met, summary=summary)
