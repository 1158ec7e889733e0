"""Closed-loop HTTP GET load generator, run as its own process (`python -m bench.http_load`):
the HTTP twin of `bench.load`, with the same protocol (one JSON spec on stdin; MEASURE_START,
MEASURE_END and RESULT {json} on stdout) so `bench.harness.run_load` drives it
(`"loadgen": "bench.http_load"` in the spec).

`urls` are picked uniformly per call (seeded), `headers` sent with each; a response is good
when its status is 200 and its Content-Type starts with `expect_type`. One keep-alive
connection per caller (aiohttp), so every server pays the same connection cost.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any

import aiohttp

from bench.load import Stats, serve

DEFAULTS: dict[str, Any] = {
    "warmup": 1.0,
    "duration": 5.0,
    "call_timeout": 30.0,
    "headers": {},
    "expect_type": "image/png",
    "seed": 17,
}


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    spec = {**DEFAULTS, **spec}
    concurrency = int(spec["concurrency"])
    urls: list[str] = list(spec["urls"])
    rng = random.Random(int(spec["seed"]))
    headers = dict(spec["headers"])
    expect = str(spec["expect_type"])
    stats = Stats()
    timeout = aiohttp.ClientTimeout(total=float(spec["call_timeout"]))
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        loop_start = time.perf_counter()
        measure_from = loop_start + float(spec["warmup"])
        stop_at = measure_from + float(spec["duration"])

        async def caller() -> None:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                stats.started += 1
                problem = None
                try:
                    async with session.get(rng.choice(urls)) as response:
                        body = await response.read()
                        if response.status != 200 or not response.content_type.startswith(expect):
                            problem = f"HTTP_{response.status}"
                            stats.fail(problem, body[:300].decode("utf-8", "replace"))
                        stats.response_bytes = len(body)
                except (aiohttp.ClientError, TimeoutError) as err:
                    problem = type(err).__name__
                    stats.fail(problem, str(err))
                stats.completed(t0, time.perf_counter(), problem, (measure_from, stop_at))

        async def marks() -> None:
            await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
            print("MEASURE_START", flush=True)
            await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
            print("MEASURE_END", flush=True)

        await asyncio.wait_for(
            asyncio.gather(marks(), *(caller() for _ in range(concurrency))),
            float(spec["warmup"]) + float(spec["duration"]) + float(spec["call_timeout"]) + 5,
        )

    return stats.summary(concurrency, max(1e-9, stop_at - measure_from))


if __name__ == "__main__":
    sys.exit(serve(run))
