"""Closed-loop gRPC load generator, run as its own process (`python -m bench.load`).

Reads one JSON spec on stdin, drives `concurrency` caller coroutines over
`channels` separate HTTP/2 connections for `warmup` + `duration` seconds and
prints, on stdout:

    MEASURE_START          when the warm-up ends (the parent samples CPU here)
    MEASURE_END            when the measured window ends
    RESULT {json}          the counts and latency percentiles

Requests and responses are raw bytes (no (de)serializer) so every peer pays
the same client-side cost; `check` says how a response is validated. Bounded:
no call is started after the window or past `max_requests`, each call has a
deadline, and the whole run has a hard stop. When every caller stopped early
(`max_requests` reached) the window ends at the last completion.

One request (`payload_hex`) or a set of them (`payloads_hex`, e.g. one per item of
a working set) picked per call by `pick`: `uniform`, `zipf` (rank r drawn with
weight 1 / r^`zipf_s`; ranks are the list order) or `sequence` (each once, in list
order, then again). `expect_in_response` (same length as the set) is a string
that each response must contain for its request (e.g. the item id asked for).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

DEFAULTS: dict[str, Any] = {
    "channels": 0,  # 0: min(concurrency, 4)
    "warmup": 1.0,
    "duration": 5.0,
    "max_requests": 2_000_000,
    "call_timeout": 10.0,
    "metadata": [],
    "check": "echo",
    "pick": "uniform",
    "zipf_s": 1.0,
    "seed": 17,
}


@dataclass
class Stats:
    started: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, completions inside the window
    window_errors: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # every failure, warm-up included
    first_error: str = ""
    response_bytes: int = 0
    last_completion: float = 0.0

    def fail(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if not self.first_error:
            self.first_error = f"{kind}: {detail}"[:500]

    def completed(self, t0: float, t1: float, problem: str | None, window: tuple[float, float]) -> None:
        """A call that started at t0 and ended at t1; counted when it ended inside the window."""
        self.last_completion = t1
        if window[0] <= t1 <= window[1]:
            if problem is None:
                self.latencies.append(t1 - t0)
            else:
                self.window_errors += 1

    def summary(self, concurrency: int, window: float) -> dict[str, Any]:
        """The RESULT fields both load generators report."""
        latencies = sorted(self.latencies)
        return {
            "concurrency": concurrency,
            "duration_s": window,
            "ok": len(latencies),
            "rps": len(latencies) / window,
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "mean_ms": (sum(latencies) / len(latencies) * 1000) if latencies else float("nan"),
            "window_errors": self.window_errors,
            "errors": sum(self.errors.values()),
            "error_codes": dict(self.errors),
            "first_error": self.first_error,
            "started": self.started,
            "response_bytes": self.response_bytes,
        }


def make_picker(spec: dict[str, Any], count: int) -> Callable[[], int]:
    """Returns the index of the next request to send."""
    if count == 1:
        return lambda: 0
    rng = random.Random(int(spec["seed"]))
    if spec["pick"] == "uniform":
        return lambda: rng.randrange(count)
    if spec["pick"] == "zipf":
        weights = [1.0 / (rank ** float(spec["zipf_s"])) for rank in range(1, count + 1)]
        cum = list(itertools.accumulate(weights))
        indexes = range(count)
        return lambda: rng.choices(indexes, cum_weights=cum)[0]
    if spec["pick"] == "sequence":
        cycle = itertools.cycle(range(count))
        return lambda: next(cycle)
    raise SystemExit(f"unknown pick {spec['pick']!r}")


def make_check(spec: dict[str, Any], payload: bytes) -> Callable[[bytes], str | None]:
    """Returns a function giving None for a good response, else why it is bad."""
    if spec["check"] == "echo":

        def check_echo(response: bytes) -> str | None:
            return None if response == payload else f"echo returned {len(response)} bytes, not the request"

        return check_echo
    if spec["check"] == "execute":
        from geopera.v1 import kernel_pb2

        operation = spec["expect_operation"]
        type_suffix = "/" + spec["expect_result_type"]

        def check_execute(response: bytes) -> str | None:
            message = kernel_pb2.ExecuteResponse.FromString(response)
            if message.operation != operation:
                return f"operation {message.operation!r} != {operation!r}"
            if not message.result.type_url.endswith(type_suffix):
                return f"result type {message.result.type_url!r}"
            return None

        return check_execute
    raise SystemExit(f"unknown check {spec['check']!r}")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    spec = {**DEFAULTS, **spec}
    concurrency = int(spec["concurrency"])
    n_channels = int(spec["channels"]) or min(concurrency, 4)
    payloads = [bytes.fromhex(h) for h in (spec.get("payloads_hex") or [spec["payload_hex"]])]
    expected = [s.encode() for s in spec.get("expect_in_response") or []]
    if expected and len(expected) != len(payloads):
        raise SystemExit("expect_in_response must have one entry per payload")
    pick = make_picker(spec, len(payloads))
    metadata = tuple((k, v) for k, v in spec["metadata"])
    checks = [make_check(spec, p) for p in payloads] if spec["check"] == "echo" else [make_check(spec, payloads[0])]
    timeout = float(spec["call_timeout"])
    max_requests = int(spec["max_requests"])
    stats = Stats()

    # A local subchannel pool gives each channel its own TCP connection
    # (channels with equal arguments otherwise share one).
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [aio.insecure_channel(spec["target"], options=options) for _ in range(n_channels)]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), 15)
        calls = [c.unary_unary(spec["method"]) for c in channels]  # bytes in, bytes out

        loop_start = time.perf_counter()
        measure_from = loop_start + float(spec["warmup"])
        stop_at = measure_from + float(spec["duration"])

        async def caller(call: aio.UnaryUnaryMultiCallable) -> None:
            while stats.started < max_requests:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                stats.started += 1
                problem = None
                index = pick()
                try:
                    response = await call(payloads[index], metadata=metadata, timeout=timeout)
                except aio.AioRpcError as err:
                    code = err.code()
                    problem = code.name if isinstance(code, grpc.StatusCode) else str(code)
                    stats.fail(problem, err.details() or "")
                else:
                    why = checks[index if len(checks) > 1 else 0](response)
                    if why is None and expected and expected[index] not in response:
                        why = f"the response does not contain {expected[index].decode()!r}"
                    if why is not None:
                        problem = "BAD_RESPONSE"
                        stats.fail(problem, why)
                    stats.response_bytes = len(response)
                stats.completed(t0, time.perf_counter(), problem, (measure_from, stop_at))

        callers_done = asyncio.Event()

        async def marks() -> None:
            await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
            print("MEASURE_START", flush=True)
            try:
                await asyncio.wait_for(callers_done.wait(), max(0.0, stop_at - time.perf_counter()))
            except TimeoutError:
                pass
            print("MEASURE_END", flush=True)

        async def all_callers() -> None:
            await asyncio.gather(*(caller(calls[i % n_channels]) for i in range(concurrency)))
            callers_done.set()

        await asyncio.wait_for(
            asyncio.gather(marks(), all_callers()), float(spec["warmup"]) + float(spec["duration"]) + timeout + 5
        )
    finally:
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)

    # The window ends early when every caller stopped at `max_requests`.
    window = max(1e-9, min(stop_at, max(stats.last_completion, measure_from)) - measure_from)
    return {**stats.summary(concurrency, window), "channels": n_channels, "request_bytes": len(payloads[0])}


def serve(run: Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]) -> int:
    """The protocol of a load generator process: a JSON spec on stdin, RESULT {json} on stdout."""
    spec = json.loads(sys.stdin.read())
    result = asyncio.run(run(spec))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve(run))
