"""Prometheus metrics of one server process, served at `/metrics` (rest/metrics.py).

Counters are per process (Prometheus sums the replicas); what needs the
database (the job queue, stored bytes) is read at scrape time by named queries
(`metrics_*` in store/queries/metrics.sql), so every replica reports the same
shared truth, at most once per `SNAPSHOT_SECONDS` per replica and each under a
statement timeout: a scrape storm cannot load the database.

Per-call recording (`CallMetrics.record`, from the edge) costs one dict lookup,
a counter increment and a histogram observation: the label children are cached.
Operation labels are bounded: a name that is not a registered operation is
counted as `other` (callers choose the operation string).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from geopera_kernel.server.store import Q

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

CALLS = Counter(
    "geopera_calls", "Calls by transport method (rpc), operation and status code.", ["rpc", "operation", "code"],
    registry=REGISTRY,
)  # fmt: skip
CALL_SECONDS = Histogram(
    "geopera_call_duration_seconds", "Call latency at the edge, by transport method and operation.",
    ["rpc", "operation"], buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
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
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def label(self, operation: str) -> str:
        """The operation as a label: a registered name, else `other` (bounded)."""
        return operation if operation in self._operations else OTHER

    def record(self, rpc: str, operation: str, code: str, seconds: float) -> None:
        # rpc and code come from fixed sets; the operation label from the registry's names.
        key = (rpc, operation if operation in self._operations else OTHER, code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (CALLS.labels(*key), CALL_SECONDS.labels(rpc, key[1]))
        children[0].inc()
        children[1].observe(seconds)


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
