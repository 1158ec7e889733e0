"""The edge's own per-call cost, in process (no server, no network): `Edge.begin` +
`end` of an `items.get` call, bare, with metrics (`CallMetrics`), and with metrics and
a recorded span (tracing on, spans kept in memory, none exported). Access log off
(its cost is the same in every variant). `python -m bench.edge_cost`; the figures
go to bench/RESULTS.md by hand with the load average (`uptime`)."""

from __future__ import annotations

import statistics
import time

from geopera_kernel.raster import tracing
from geopera_kernel.server.edge.call import Edge
from geopera_kernel.server.metrics import CallMetrics

CALLS = 200_000


def per_call_us(edge: Edge, calls: int = CALLS) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call = edge.begin("Execute", None, None)
        call.operation = "items.get"
        edge.end(call, "OK")
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    bare, measured = Edge(), Edge(CallMetrics(["items.get"]))
    runs: dict[str, list[float]] = {"bare": [], "metrics": []}
    for _ in range(5):  # interleaved
        runs["bare"].append(per_call_us(bare))
        runs["metrics"].append(per_call_us(measured))
    from opentelemetry.sdk.trace import TracerProvider

    tracing._State.enabled, tracing._State.tracer = True, TracerProvider().get_tracer("bench")
    runs["metrics+spans"] = [per_call_us(measured) for _ in range(5)]
    for name, values in runs.items():
        print(f"{name:14s} median {statistics.median(values):6.2f} us/call  [{min(values):.2f}-{max(values):.2f}]")


if __name__ == "__main__":
    main()
