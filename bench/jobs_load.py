"""Client side of the processing-jobs bench (`bench/jobs.py`), run as its own
process (`python -m bench.jobs_load`) so its CPU is measured apart from the
driver's.

Reads one JSON spec on stdin and runs one `mode`:

- `dispatch`: an in-process worker session (WorkerService/Connect, grpc.aio)
  holds the job tokens; one job at a time, it times `processing.create_and_dispatch`
  -> assignment received, then completes the job (RegisterOutputs `commit`).
- `watch`: the same worker session holds one job; a WatchJob stream on it;
  ReportProgress every `interval` s with a distinct message; times report sent
  -> progress event received by the watcher.
- `throughput`: closed-loop clients, each `create_and_dispatch` then WatchJob
  until the stream ends (terminal state), against real worker processes.

Both timestamps of every sample come from this process's `perf_counter`.
Prints `MEASURE_START` / `MEASURE_END` around the measured part (the parent
samples CPU there) and `RESULT {json}`. Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from typing import Any

from google.protobuf import any_pb2, struct_pb2
from grpc import aio

from geopera.v1 import (
    kernel_pb2,
    kernel_pb2_grpc,
    processing_pb2,
    resources_pb2,
    worker_pb2,
    worker_pb2_grpc,
)

JOB_TYPE = "test_noop"
# The schema the real test_noop plugin declares (tests/support/job_plugins.py),
# so the raw session does not change what the job type publishes.
NOOP_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"note": {"type": "string", "default": "", "description": "ignored"}},
}
SUCCEEDED = resources_pb2.JobStatus.JOB_STATUS_SUCCEEDED
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def summary_ms(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in ms of samples in seconds."""
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 0.50) * 1000,
        "p90": percentile(ordered, 0.90) * 1000,
        "p99": percentile(ordered, 0.99) * 1000,
        "max": (ordered[-1] * 1000) if ordered else float("nan"),
        "mean": (sum(ordered) / len(ordered) * 1000) if ordered else float("nan"),
    }


class Errors:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first = ""

    def add(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        if not self.first:
            self.first = f"{kind}: {detail}"[:500]

    def add_exception(self, err: BaseException) -> None:
        if isinstance(err, aio.AioRpcError):
            self.add(err.code().name, err.details() or "")
        elif isinstance(err, TimeoutError):
            self.add("TIMEOUT", repr(err))
        else:
            self.add(type(err).__name__, str(err))

    def total(self) -> int:
        return sum(self.counts.values())


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def create_request(project: str, note: str) -> kernel_pb2.ExecuteRequest:
    params = processing_pb2.ProcessingCreateAndDispatchParams(
        project_id=project, job_type_id=JOB_TYPE, input_params=_struct({"note": note})
    )
    packed = any_pb2.Any()
    packed.Pack(params)
    return kernel_pb2.ExecuteRequest(operation="processing.create_and_dispatch", params=packed)


async def create_job(kernel: kernel_pb2_grpc.KernelServiceStub, metadata: Any, project: str, note: str) -> str:
    response = await kernel.Execute(create_request(project, note), metadata=metadata, timeout=10)
    result = processing_pb2.ProcessingCreateAndDispatchResult()
    if not response.result.Unpack(result) or not result.job.id:
        raise RuntimeError(f"unexpected create_and_dispatch response {response.result.type_url}")
    return result.job.id


async def complete_job(worker: worker_pb2_grpc.WorkerServiceStub, job_id: str, job_token: str) -> None:
    """RegisterOutputs with only a commit: no outputs, the job SUCCEEDS."""
    response = await worker.RegisterOutputs(
        iter([worker_pb2.RegisterOutputsRequest(job_id=job_id, commit=True)]), metadata=bearer(job_token), timeout=10
    )
    if response.job.status != SUCCEEDED:
        raise RuntimeError(f"job {job_id} is {response.job.status} after RegisterOutputs")


class RawSession:
    """A worker session driven by this process (like tests/jobs_support.RawWorker,
    but on grpc.aio): it declares test_noop and queues each assignment with the
    `perf_counter` of its arrival."""

    def __init__(self, channel: aio.Channel, token: str, capacity: int = 1) -> None:
        self.stub = worker_pb2_grpc.WorkerServiceStub(channel)
        self._token = token
        self._capacity = capacity
        self._outbound: asyncio.Queue[worker_pb2.ConnectRequest | None] = asyncio.Queue()
        self.assignments: asyncio.Queue[tuple[float, worker_pb2.JobAssignment]] = asyncio.Queue()
        self.active: set[str] = set()
        self._welcome = asyncio.Event()
        self._heartbeat_seconds = 3.0
        self._call: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> RawSession:
        declaration = worker_pb2.JobTypeDeclaration(
            job_type_id=JOB_TYPE,
            description="Does nothing and registers no output (tests, bench).",
            input_schema=_struct(NOOP_SCHEMA),
            cost_model=resources_pb2.CostModel(flat=1, minimum=1),
        )
        hello = worker_pb2.WorkerHello(name="bench-raw-worker", capacity=self._capacity, job_types=[declaration])
        self._outbound.put_nowait(worker_pb2.ConnectRequest(hello=hello))
        self._call = self.stub.Connect(self._requests(), metadata=bearer(self._token))
        self._tasks.append(asyncio.create_task(self._read()))
        await asyncio.wait_for(self._welcome.wait(), 10)
        self._tasks.append(asyncio.create_task(self._beat()))
        return self

    async def _requests(self) -> Any:
        while (message := await self._outbound.get()) is not None:
            yield message

    async def _read(self) -> None:
        async for response in self._call:
            arrived = time.perf_counter()
            kind = response.WhichOneof("message")
            if kind == "welcome":
                self._heartbeat_seconds = response.welcome.heartbeat_interval_seconds or 3.0
                self._welcome.set()
            elif kind == "assignment":
                self.active.add(response.assignment.job.id)
                self.assignments.put_nowait((arrived, response.assignment))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds * 0.5)
            beat = worker_pb2.WorkerHeartbeat(active_job_ids=sorted(self.active))
            self._outbound.put_nowait(worker_pb2.ConnectRequest(heartbeat=beat))

    def done(self, job_id: str) -> None:
        self.active.discard(job_id)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._outbound.put_nowait(None)
        if self._call is not None:
            self._call.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def run_dispatch(spec: dict[str, Any]) -> dict[str, Any]:
    """Sequential jobs: create_and_dispatch -> assignment at the raw session."""
    project, user_md = spec["project"], bearer(spec["user_token"])
    warmup, samples = int(spec["warmup_samples"]), int(spec["samples"])
    pause = float(spec.get("pause", 0.01))
    deadline = time.perf_counter() + float(spec.get("time_limit", 40))
    errors = Errors()
    assign: list[float] = []
    create_rpc: list[float] = []
    assigned_before_response = 0
    complete_rpc: list[float] = []
    done = 0
    async with aio.insecure_channel(spec["target"], options=CHANNEL_OPTIONS) as channel:
        kernel = kernel_pb2_grpc.KernelServiceStub(channel)
        session = await RawSession(channel, spec["worker_token"]).start()
        try:
            for index in range(warmup + samples):
                if index == warmup:
                    print("MEASURE_START", flush=True)
                if time.perf_counter() > deadline or errors.total() >= 5:
                    break
                measured = index >= warmup
                created_at: list[float] = []

                async def create(n: int = index, stamps: list[float] = created_at) -> str:
                    job_id = await create_job(kernel, user_md, project, f"dispatch-{n}")
                    stamps.append(time.perf_counter())
                    return job_id

                t0 = time.perf_counter()
                creating = asyncio.create_task(create())
                try:
                    arrived, assignment = await asyncio.wait_for(session.assignments.get(), 10)
                    job_id = await asyncio.wait_for(creating, 10)
                    if assignment.job.id != job_id:
                        errors.add("WRONG_JOB", f"assigned {assignment.job.id}, created {job_id}")
                        break
                    t2 = time.perf_counter()
                    await complete_job(session.stub, job_id, assignment.job_token)
                    t3 = time.perf_counter()
                    session.done(job_id)
                except Exception as err:
                    creating.cancel()
                    errors.add_exception(err)
                    break  # the session state is unknown now: stop this mode
                done += 1
                if measured:
                    assign.append(arrived - t0)
                    create_rpc.append(created_at[0] - t0)
                    complete_rpc.append(t3 - t2)
                    assigned_before_response += arrived < created_at[0]
                await asyncio.sleep(pause)
            print("MEASURE_END", flush=True)
        finally:
            await session.close()
    return {
        "mode": "dispatch",
        "jobs": done,
        "assign_ms": summary_ms(assign),
        "create_rpc_ms": summary_ms(create_rpc),
        "complete_rpc_ms": summary_ms(complete_rpc),
        "assigned_before_response": assigned_before_response,
        "pause_ms": pause * 1000,
        "errors": errors.total(),
        "error_codes": dict(errors.counts),
        "first_error": errors.first,
    }


async def run_watch(spec: dict[str, Any]) -> dict[str, Any]:
    """One job held by the raw session, one WatchJob stream on it; ReportProgress
    every `interval` s; latency = report sent -> event at the watcher."""
    project, user_md = spec["project"], bearer(spec["user_token"])
    warmup, samples = int(spec["warmup_samples"]), int(spec["samples"])
    interval = float(spec.get("interval", 0.02))
    time_limit = float(spec.get("time_limit", 30))
    errors = Errors()
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    report_rpc: list[float] = []
    event_types: Counter[str] = Counter()
    last_event: list[kernel_pb2.WatchJobResponse] = []
    async with aio.insecure_channel(spec["target"], options=CHANNEL_OPTIONS) as channel:
        kernel = kernel_pb2_grpc.KernelServiceStub(channel)
        session = await RawSession(channel, spec["worker_token"]).start()
        watcher: asyncio.Task[None] | None = None
        try:
            job_id = await create_job(kernel, user_md, project, "watch")
            _, assignment = await asyncio.wait_for(session.assignments.get(), 10)
            if assignment.job.id != job_id:
                raise RuntimeError(f"assigned {assignment.job.id}, created {job_id}")
            job_md = bearer(assignment.job_token)
            first = asyncio.Event()
            changed = asyncio.Event()

            async def watch() -> None:
                call = kernel.WatchJob(
                    kernel_pb2.WatchJobRequest(job_id=job_id), metadata=user_md, timeout=time_limit + 10
                )
                async for event in call:
                    arrived = time.perf_counter()
                    event_types[event.event_type] += 1
                    if event.event_type in ("progress", "running"):
                        received.setdefault(event.job.message, arrived)
                    last_event[:] = [event]
                    first.set()
                    changed.set()

            watcher = asyncio.create_task(watch())
            await asyncio.wait_for(first.wait(), 10)
            deadline = time.perf_counter() + time_limit
            total = warmup + samples
            for index in range(total):
                if index == warmup:
                    print("MEASURE_START", flush=True)
                if time.perf_counter() > deadline or errors.total() >= 5:
                    break
                message = f"report {index}"
                t0 = time.perf_counter()
                if index >= warmup:
                    sent[message] = t0
                try:
                    reply = await worker_pb2_grpc.WorkerServiceStub(channel).ReportProgress(
                        worker_pb2.ReportProgressRequest(job_id=job_id, progress=(index + 1) / (total + 1),
                                                         message=message),
                        metadata=job_md, timeout=10,
                    )  # fmt: skip
                    if reply.cancel_requested:
                        errors.add("CANCELLED", "the server asked to stop the job")
                except aio.AioRpcError as err:
                    errors.add_exception(err)
                t1 = time.perf_counter()
                if index >= warmup:
                    report_rpc.append(t1 - t0)
                await asyncio.sleep(max(0.0, t0 + interval - time.perf_counter()))
            # Let the last events arrive (bounded), then close the window.
            wait_until = time.perf_counter() + 2.0
            while not set(sent) <= set(received) and (left := wait_until - time.perf_counter()) > 0:
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), left)
            print("MEASURE_END", flush=True)
            await complete_job(session.stub, job_id, assignment.job_token)
            session.done(job_id)
            await asyncio.wait_for(watcher, 10)  # the stream ends after the terminal event
            if not last_event or last_event[0].event_type != "succeeded":
                errors.add("NO_TERMINAL_EVENT", f"last event {last_event[0].event_type if last_event else None}")
        except Exception as err:
            errors.add_exception(err)
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            await session.close()
    latencies = [received[m] - t for m, t in sent.items() if m in received]
    missing = len(sent) - len(latencies)
    if missing:
        errors.add("EVENT_MISSING", f"{missing} progress event(s) never reached the watcher")
    return {
        "mode": "watch",
        "reports": len(sent),
        "event_ms": summary_ms(latencies),
        "report_rpc_ms": summary_ms(report_rpc),
        "interval_ms": interval * 1000,
        "event_types": dict(event_types),
        "errors": errors.total(),
        "error_codes": dict(errors.counts),
        "first_error": errors.first,
    }


def _server_seconds(value: Any) -> float | None:
    if not value.seconds and not value.nanos:
        return None
    return value.seconds + value.nanos / 1e9


async def run_throughput(spec: dict[str, Any]) -> dict[str, Any]:
    """Closed loop: each client creates a job and watches it to its end. Client n
    uses `user_tokens[n % len]` (one token holds at most 16 open streams)."""
    project = spec["project"]
    user_mds = [bearer(t) for t in spec.get("user_tokens") or [spec["user_token"]]]
    concurrency = int(spec["concurrency"])
    n_channels = int(spec.get("channels") or min(concurrency, 4))
    warmup, duration = float(spec["warmup"]), float(spec["duration"])
    max_jobs = int(spec.get("max_jobs", 100_000))
    drain_seconds = float(spec.get("drain_seconds", 20))
    errors = Errors()
    latencies: list[float] = []
    stages: dict[str, list[float]] = {"create_rpc": [], "to_start": [], "start_to_end": [], "end_to_client": []}
    started = 0
    finished = 0
    channels = [aio.insecure_channel(spec["target"], options=CHANNEL_OPTIONS) for _ in range(n_channels)]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), 15)
        stubs = [kernel_pb2_grpc.KernelServiceStub(c) for c in channels]
        loop_start = time.perf_counter()
        measure_from = loop_start + warmup
        stop_at = measure_from + duration

        async def client(kernel: kernel_pb2_grpc.KernelServiceStub, n: int) -> None:
            nonlocal started, finished
            while started < max_jobs:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                started += 1
                wall0 = time.time()
                last: kernel_pb2.WatchJobResponse | None = None
                problem = False
                t_created = t0
                try:
                    user_md = user_mds[n % len(user_mds)]
                    job_id = await create_job(kernel, user_md, project, f"c{n}")
                    t_created = time.perf_counter()
                    call = kernel.WatchJob(kernel_pb2.WatchJobRequest(job_id=job_id), metadata=user_md, timeout=30)
                    async for event in call:
                        last = event
                    if last is None or last.job.status != SUCCEEDED:
                        problem = True
                        errors.add("NOT_SUCCEEDED", f"job {job_id} ended {last.job.status if last else None}")
                except Exception as err:
                    problem = True
                    errors.add_exception(err)
                t1 = time.perf_counter()
                wall1 = time.time()
                finished += 1
                if problem or not (measure_from <= t1 <= stop_at) or last is None:
                    continue
                latencies.append(t1 - t0)
                stages["create_rpc"].append(t_created - t0)
                job = last.job
                start, end = _server_seconds(job.start_time), _server_seconds(job.end_time)
                if start is not None and end is not None:
                    stages["to_start"].append(start - wall0)
                    stages["start_to_end"].append(end - start)
                    stages["end_to_client"].append(wall1 - end)

        async def marks() -> None:
            await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
            print("MEASURE_START", flush=True)
            await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
            print("MEASURE_END", flush=True)

        tasks = [asyncio.create_task(client(stubs[i % n_channels], i)) for i in range(concurrency)]
        # After the window no job is started; in-flight ones finish (bounded).
        try:
            await asyncio.wait_for(asyncio.gather(marks(), *tasks), warmup + duration + drain_seconds)
        except TimeoutError:
            still = started - finished
            errors.add("DRAIN_TIMEOUT", f"{still} job(s) still running {drain_seconds:g} s after the window")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)
    return {
        "mode": "throughput",
        "concurrency": concurrency,
        "channels": n_channels,
        "duration_s": duration,
        "completed": len(latencies),
        "jobs_per_s": len(latencies) / duration,
        "latency_ms": summary_ms(latencies),
        "stages_ms": {k: summary_ms(v) for k, v in stages.items()},
        "started": started,
        "finished": finished,
        "errors": errors.total(),
        "error_codes": dict(errors.counts),
        "first_error": errors.first,
    }


MODES = {"dispatch": run_dispatch, "watch": run_watch, "throughput": run_throughput}


def main() -> int:
    spec = json.loads(sys.stdin.read())
    result = asyncio.run(MODES[spec["mode"]](spec))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
