"""Prometheus metrics of one server process, served at `/metrics` (rest/metrics.py).

Counters are per process (Prometheus sums the replicas); what needs the
database (the job queue, stored bytes) is read at scrape time by named queries
(`metrics_*` in store/queries/metrics.sql), so every replica reports the same
shared truth, at most once per `SNAPSHOT_SECONDS` per replica and each under a
statement timeout: a scrape storm cannot load the database.

Per-call recording (`CallMetrics.record`, from the edge) is one dict lookup and
three additions to plain lists; a scrape turns them into what a prometheus-client
Counter and Histogram would expose (`_CallSeries`). Operation labels are bounded:
a name that is not a registered operation is counted as `other` (callers choose
the operation string).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString

from geopera_kernel.server.store import Q

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_BOUNDS = (*_LATENCY_BUCKETS, INF)
_LE = tuple(floatToGoString(b) for b in _BOUNDS)


class _CallSeries(Collector):
    """`geopera_calls` (a counter by rpc, operation, code) and
    `geopera_call_duration_seconds` (a histogram by rpc, operation), kept as plain
    lists that `CallMetrics.record` adds to and exposed at scrape time as the same
    samples a prometheus-client Counter and Histogram give (`_total` and `_created`;
    cumulative `_bucket`s, `_count`, `_sum`, `_created`). prometheus-client takes a
    lock per counter and walks the buckets per observation; calls end on the event
    loop only (gRPC and HTTP alike), as scrapes are served, so no lock is needed."""

    def __init__(self) -> None:
        # (rpc, operation, code) -> [count, created]
        self.calls: dict[tuple[str, str, str], list[float]] = {}
        # (rpc, operation) -> [count per bucket (not cumulative)..., sum, created]
        self.latency: dict[tuple[str, str], list[float]] = {}

    def cells(self, key: tuple[str, str, str]) -> tuple[list[float], list[float]]:
        """The lists one label set adds to (made on its first call)."""
        now = time.time()
        count = self.calls.setdefault(key, [0.0, now])
        latency = self.latency.setdefault(key[:2], [*(0.0 for _ in _BOUNDS), 0.0, now])
        return count, latency

    def collect(self) -> Iterator[Metric]:
        created = getattr(prometheus_metrics, "_use_created", True)
        calls = Metric("geopera_calls", "Calls by transport method (rpc), operation and status code.", "counter")
        for (rpc, operation, code), (count, since) in list(self.calls.items()):
            labels = {"rpc": rpc, "operation": operation, "code": code}
            calls.add_sample("geopera_calls_total", labels, count)
            if created:
                calls.add_sample("geopera_calls_created", labels, since)
        yield calls
        name = "geopera_call_duration_seconds"
        latency = Metric(name, "Call latency at the edge, by transport method and operation.", "histogram")
        for (rpc, operation), cells in list(self.latency.items()):
            labels = {"rpc": rpc, "operation": operation}
            total = 0.0
            for le, cell in zip(_LE, cells, strict=False):
                total += cell
                latency.add_sample(f"{name}_bucket", {**labels, "le": le}, total)
            latency.add_sample(f"{name}_count", labels, total)
            latency.add_sample(f"{name}_sum", labels, cells[-2])
            if created:
                latency.add_sample(f"{name}_created", labels, cells[-1])
        yield latency


_CALL_SERIES = _CallSeries()
REGISTRY.register(_CALL_SERIES)
LEASES_EXPIRED = Counter(
    "geopera_job_leases_expired", "Job leases that expired (the worker stopped heartbeating).", registry=REGISTRY
)
JOB_RETRIES = Counter(
    "geopera_job_retries", "Jobs dispatched again after a failed or lost attempt, by job type.", ["job_type"],
    registry=REGISTRY,
)  # fmt: skip
CREDITS = Counter(
    "geopera_credits", "Credits moved by jobs: reserved at creation, then captured, released or waived.",
    ["movement"], registry=REGISTRY,
)  # fmt: skip
ANALYTICS_PIXELS = Counter(
    "geopera_analytics_pixels",
    "Pixels read by analytics methods: the calls this server ran and the jobs whose answers it committed.",
    ["method"], registry=REGISTRY,
)  # fmt: skip
ANALYTICS_SECONDS = Counter(
    "geopera_analytics_seconds",
    "Wall seconds spent in analytics methods: calls run here, and jobs from attempt start to commit.",
    ["method"], registry=REGISTRY,
)  # fmt: skip
WEBHOOK_DELIVERIES = Counter(
    "geopera_webhook_deliveries", "Webhook delivery attempts by outcome (delivered, failed).", ["outcome"],
    registry=REGISTRY,
)  # fmt: skip

OTHER = "other"


class CallMetrics:
    """What the edge records per call; `operations` are the registered names."""

    def __init__(self, operations: Iterable[str]) -> None:
        self._operations = frozenset(operations) | {""}
        self._cells: dict[tuple[str, str, str], tuple[list[float], list[float]]] = {}

    def label(self, operation: str) -> str:
        """The operation as a label: a registered name, else `other` (bounded)."""
        return operation if operation in self._operations else OTHER

    def record(self, rpc: str, operation: str, code: str, seconds: float) -> None:
        # rpc and code come from fixed sets; the operation label from the registry's names.
        key = (rpc, operation if operation in self._operations else OTHER, code)
        cells = self._cells.get(key)
        if cells is None:
            cells = self._cells[key] = _CALL_SERIES.cells(key)
        count, latency = cells
        count[0] += 1.0
        latency[bisect.bisect_left(_BOUNDS, seconds)] += 1.0  # the first bucket whose bound >= seconds
        latency[-2] += seconds


def analytics_ran(method: str, pixels: int, seconds: float) -> None:
    ANALYTICS_PIXELS.labels(method).inc(max(pixels, 0))
    ANALYTICS_SECONDS.labels(method).inc(seconds)


# Database snapshots: at most one per this many seconds per replica.
SNAPSHOT_SECONDS = 1.0
# Each snapshot query gives up after this long (the scrape then reports none).
SNAPSHOT_TIMEOUT_MS = 2000


class DatabaseCollector(Collector):
    """The job queue and the stored bytes, read from the database by `refresh`
    (awaited by the `/metrics` handler before it renders) and reported by
    `collect` (which prometheus-client calls synchronously)."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self._read_at = -SNAPSHOT_SECONDS
        self._jobs: list[dict[str, Any]] = []
        self._storage: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at < SNAPSHOT_SECONDS:
                return
            async with self._db.transaction() as tx:
                await tx.execute(f"SET LOCAL statement_timeout = {SNAPSHOT_TIMEOUT_MS}")
                self._jobs = list(await (await tx.execute(Q.metrics_open_jobs)).fetchall())
                self._storage = await (await tx.execute(Q.metrics_stored_bytes)).fetchone()
            self._read_at = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "geopera_jobs", "Jobs not yet ended, by job type and status (all replicas).", labels=["job_type", "status"]
        )
        age = GaugeMetricFamily(
            "geopera_jobs_oldest_age_seconds",
            "Age of the oldest job not yet ended, by job type and status (all replicas).",
            labels=["job_type", "status"],
        )
        for row in self._jobs:
            depth.add_metric([row["job_type_id"], row["status"]], row["jobs"])
            age.add_metric([row["job_type_id"], row["status"]], float(row["oldest_age_seconds"]))
        yield depth
        yield age
        stored = GaugeMetricFamily(
            "geopera_stored_bytes", "Bytes stored, by what (asset, artifact, upload; all replicas).", labels=["kind"]
        )
        if self._storage is not None:
            for kind in ("asset", "artifact", "upload"):
                stored.add_metric([kind], self._storage[f"{kind}_bytes"])
        yield stored
