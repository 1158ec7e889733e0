"""The per-call series (`geopera_calls`, `geopera_call_duration_seconds`), kept in
plain lists by `CallMetrics`, scrape as exactly what a prometheus-client Counter and
Histogram fed the same calls expose (but the `_created` time stamps): every sample,
label and bucket boundary (a value on a bound counts in that bound's bucket)."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from geopera_kernel.server import metrics


def _without_created(text: str) -> str:
    """The exposition without its `_created` series (time stamps), HELP and TYPE lines included."""
    return "".join(line for line in text.splitlines(keepends=True) if not re.search(r"\w_created\b", line))


def _calls_part(text: str) -> str:
    """The two per-call families of the text exposition (registered before the job lease counter)."""
    return text[text.index("# HELP geopera_calls_total") : text.index("# HELP geopera_job_leases_expired")]


def test_the_call_series_scrape_as_a_prometheus_counter_and_histogram():
    reference = CollectorRegistry()
    calls = Counter(
        "geopera_calls", "Calls by transport method (rpc), operation and status code.", ["rpc", "operation", "code"],
        registry=reference,
    )  # fmt: skip
    latency = Histogram(
        "geopera_call_duration_seconds", "Call latency at the edge, by transport method and operation.",
        ["rpc", "operation"], buckets=metrics._LATENCY_BUCKETS, registry=reference,
    )  # fmt: skip
    recorder = metrics.CallMetrics(["items.get", "xt.exposition"])
    observed = [
        ("Execute", "xt.exposition", "OK", 0.0004),
        ("Execute", "xt.exposition", "OK", 0.0005),  # on a bound
        ("Execute", "xt.exposition", "OK", 0.00051),
        ("Execute", "xt.made_up", "INVALID_ARGUMENT", 0.02),  # counted as `other`
        ("XtRpc", "", "OK", 100.0),  # past the last bound: +Inf only
        ("Execute", "xt.exposition", "NOT_FOUND", 0.001),
    ]
    before = _without_created(_calls_part(generate_latest(metrics.REGISTRY).decode()))
    for rpc, operation, code, seconds in observed:
        recorder.record(rpc, operation, code, seconds)
        label = recorder.label(operation)
        calls.labels(rpc, label, code).inc()
        latency.labels(rpc, label).observe(seconds)
    after = _without_created(_calls_part(generate_latest(metrics.REGISTRY).decode()))
    expected = _without_created(generate_latest(reference).decode())
    # The process-wide registry also holds other tests' calls: compare this test's label sets.
    mine = [line for line in after.splitlines() if "xt." in line or "XtRpc" in line or line.startswith("#")]
    assert not any("xt." in line or "XtRpc" in line for line in before.splitlines())
    assert mine == [line for line in expected.splitlines() if "xt." in line or "XtRpc" in line or line.startswith("#")]
