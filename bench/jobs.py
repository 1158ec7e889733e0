"""Processing jobs: dispatch latency, WatchJob event latency and end-to-end
no-op throughput with real worker processes.

Processes besides this driver: `geopera serve` on a fresh database (default
settings), four `python -m geopera_kernel.worker.main` processes (test plugins, for the
throughput point only), and one client process per measurement
(`bench.jobs_load`, grpc.aio). The client process also plays the worker when
it must hold job tokens (dispatch and watch latency), so both timestamps of a
sample come from one clock.

Order matters: the dispatch and watch measurements run before the real
workers start (otherwise they would take the jobs); the raw worker session
ends with its client process, before the real workers connect.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2

from bench.harness import REPO, LogWindow, Options, Outcome, Spread, cpu_seconds, interleave
from bench.profile import Profiler
from bench.results import Results, machine_line, markdown_table, utc_now
from bench.server import bench_server
from geopera.v1 import kernel_pb2, kernel_pb2_grpc, processing_pb2
from tests.support.workers import WorkerProcess, granted_test_job_types

NAME = "jobs"
TITLE = "Processing jobs: dispatch latency, WatchJob latency, no-op throughput"
PROJECT = "bench"
CREDITS = 10_000_000

DISPATCH_WARMUP, DISPATCH_SAMPLES = 20, 300
WATCH_WARMUP, WATCH_SAMPLES, WATCH_INTERVAL = 10, 200, 0.02
WORKERS, WORKER_CAPACITY = 4, 8
CLIENTS = (4, 16, 32)  # closed-loop clients per throughput point (4 x 4 = 16 worker slots)
TARGET_CLIENTS = 32
# Throughput clients share USERS user tokens (client n uses token n % USERS): a token
# may hold at most 16 open streams (GEOPERA_MAX_STREAMS_PER_TOKEN), each client one WatchJob.
USERS = 4

TARGET_DISPATCH_P50_MS = 25.0
TARGET_JOBS_PER_S = 100.0
TARGET_WATCH_P99_MS = 100.0

PidSource = Callable[[], list[int]]
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- setup ---------------------------------------------------------------------


async def seed(url: str, home: Path) -> dict[str, str]:
    """Project `bench` with plenty of credits, USERS user tokens on it (`user` is the
    first, `users` all of them, comma-separated) and a worker token."""
    from geopera_kernel.server.app import build_services
    from geopera_kernel.server.auth import USER_SCOPES
    from geopera_kernel.server.config import Settings

    services = await build_services(Settings(database_url=url, home=home, db_pool_size=2), url)
    try:
        await services.catalog.create_project(PROJECT, "Bench")
        await services.credits.grant(PROJECT, CREDITS, "bench grant")
        users = [
            (await services.tokens.create_token(
                name=f"bench-user-{i}", kind="user", scopes=list(USER_SCOPES), project_ids=[PROJECT]
            ))[1]
            for i in range(USERS)
        ]  # fmt: skip
        _, worker = await services.tokens.create_token(
            name="bench-worker", kind="worker", scopes=["worker"], project_ids=[], job_type_ids=granted_test_job_types()
        )
        return {"user": users[0], "users": ",".join(users), "worker": worker}
    finally:
        await services.db.close()


def wait_for_workers(address: str, token: str, count: int, timeout: float = 60) -> None:
    """Until `count` connected workers declare test_cog (only real workers do)."""
    params = any_pb2.Any()
    params.Pack(processing_pb2.ProcessingJobTypesListParams())
    request = kernel_pb2.ExecuteRequest(operation="processing.job_types.list", params=params)
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = kernel_pb2_grpc.KernelServiceStub(channel)
        while True:
            response = stub.Execute(request, metadata=[("authorization", f"Bearer {token}")], timeout=10)
            listed = processing_pb2.ProcessingJobTypesListResult()
            response.result.Unpack(listed)
            if any(t.job_type_id == "test_cog" and t.connected_workers >= count for t in listed.job_types):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} workers connected after {timeout:g} s")
            time.sleep(0.1)


# -- one client run with CPU sampling ------------------------------------------------


def _machine_busy_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _CLK_TCK


def run_client(
    spec: dict[str, Any],
    groups: dict[str, PidSource],
    time_limit: float,
    on_measure_start: Callable[[], None] | None = None,
    on_measure_end: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run `bench.jobs_load` with `spec`; adds `cpu` (cores per group over the
    measured window; `load` is the client process, `machine` all of the
    machine's busy time) and `window_s`. Processes (PostgreSQL backends) that
    appear during the window count in full."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.jobs_load"], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    killer = threading.Timer(time_limit, proc.kill)
    killer.start()
    groups = {**groups, "load": lambda: [proc.pid]}
    before: dict[str, dict[int, float]] = {}
    after: dict[str, dict[int, float]] = {}
    machine0 = machine1 = t_start = t_end = 0.0
    result: dict[str, Any] | None = None
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(spec))
        proc.stdin.close()
        for line in proc.stdout:
            line = line.strip()
            if line == "MEASURE_START":
                t_start, machine0 = time.monotonic(), _machine_busy_seconds()
                before = {n: {p: c for p in src() if (c := cpu_seconds(p)) is not None} for n, src in groups.items()}
                if on_measure_start is not None:
                    on_measure_start()
            elif line == "MEASURE_END":
                pids = {n: set(src()) | set(before.get(n, {})) for n, src in groups.items()}
                after = {n: {p: c for p in ps if (c := cpu_seconds(p)) is not None} for n, ps in pids.items()}
                t_end, machine1 = time.monotonic(), _machine_busy_seconds()
                if on_measure_end is not None:
                    on_measure_end()
            elif line.startswith("RESULT "):
                result = json.loads(line[len("RESULT ") :])
        code = proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if result is None:
        raise RuntimeError(f"bench.jobs_load ({spec['mode']}) exited with {code} without a result")
    wall = t_end - t_start
    cpu: dict[str, float] = {}
    if wall > 0:
        for name, now in after.items():
            cpu[name] = sum(c - before[name].get(p, 0.0) for p, c in now.items()) / wall
        cpu["machine"] = (machine1 - machine0) / wall
        cpu["other"] = max(0.0, cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine"))
    result["cpu"] = cpu
    result["window_s"] = wall
    return result


# -- report ------------------------------------------------------------------------


def _f(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def _s(values: list[float], digits: int = 1) -> str:
    """median [min–max] of the runs' values (NaN-free), `-` when there are none."""
    clean = [v for v in values if v == v]
    return Spread.of(clean).fmt(f".{digits}f") if clean else "-"


def _med(values: list[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


def _row(label: str, runs: list[dict[str, float]]) -> list[str]:
    return [label, _s([r["n"] for r in runs], 0)] + [_s([r[k] for r in runs]) for k in ("p50", "p90", "p99", "max",
                                                                                          "mean")]  # fmt: skip


def _errors(results: list[dict[str, Any]]) -> str:
    total = sum(r["errors"] for r in results)
    if not total:
        return "0"
    codes: Counter[str] = Counter()
    for r in results:
        codes.update(r["error_codes"])
    return f"**{total}** ({', '.join(f'{k}×{v}' for k, v in sorted(codes.items()))})"


CPU_GROUPS = ("server", "workers", "postgres", "pg_background", "load", "other", "machine")


def _cpu_row(label: str, results: list[dict[str, Any]], per: list[float]) -> list[str]:
    """Median over the runs of each group's cores and of its CPU ms per job (per that run's rate)."""
    cells = [label]
    for group in CPU_GROUPS:
        values = [r["cpu"][group] for r in results if group in r["cpu"]]
        cells.append(_f(_med(values), 2) if values else "-")
    for group in ("server", "workers", "postgres", "load"):
        values = [r["cpu"][group] / rate * 1000 for r, rate in zip(results, per, strict=True)
                  if rate and group in r["cpu"]]  # fmt: skip
        cells.append(_f(_med(values), 2) if values else "-")
    return cells


def where_time_goes(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Pools the target point's runs: the server's access-log lines per RPC in the
    windows, and the pg_stat_activity samples."""
    jobs = sum(p["completed"] for p in points)
    per_rpc: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"duration": [], "db_ms": [], "db_uses": []})
    samples = 0
    busy: Counter[str] = Counter()
    queries: Counter[str] = Counter()
    idle_in_tx = 0
    for p in points:
        for line in p["access"]:
            rpc = line["rpc"] + (f" {line['operation']}" if line.get("operation") else "")
            per_rpc[rpc]["duration"].append(float(line["duration_ms"]))
            per_rpc[rpc]["db_ms"].append(float(line.get("db_ms", 0.0)))
            per_rpc[rpc]["db_uses"].append(float(line.get("db_uses", 0)))
        activity = p["activity"]
        samples += activity["samples"]
        busy.update(activity["busy"])
        queries.update(activity["queries"])
        idle_in_tx += activity["states"].get("idle in transaction", 0)
    rows = []
    for rpc, v in sorted(per_rpc.items(), key=lambda kv: -sum(kv[1]["duration"])):
        rows.append({
            "rpc": rpc, "calls": len(v["duration"]), "per_job": len(v["duration"]) / jobs if jobs else float("nan"),
            "p50_ms": _med(v["duration"]), "mean_ms": sum(v["duration"]) / len(v["duration"]),
            "db_ms": sum(v["db_ms"]) / len(v["db_ms"]), "db_uses": sum(v["db_uses"]) / len(v["db_uses"]),
        })  # fmt: skip
    return {
        "jobs": jobs,
        "rpcs": rows,
        "samples": samples,
        "active": sum(busy.values()) / samples if samples else float("nan"),
        "idle_in_tx": idle_in_tx / samples if samples else float("nan"),
        "busy": [(k, v / samples) for k, v in busy.most_common(6)] if samples else [],
        "queries": [(k, v / samples) for k, v in queries.most_common(6)] if samples else [],
    }


def report(
    dispatch: list[dict[str, Any]],
    watch: list[dict[str, Any]],
    points: dict[int, list[dict[str, Any]]],
    context: dict[str, Any],
) -> tuple[str, Outcome]:
    runs = context["runs"]
    target = points[TARGET_CLIENTS]
    d50 = _med([d["assign_ms"]["p50"] for d in dispatch])
    w99 = _med([w["event_ms"]["p99"] for w in watch])
    rate = _med([p["jobs_per_s"] for p in target])
    checks = [
        ("Dispatch latency p50 (create_and_dispatch -> assignment at the worker)",
         f"< {TARGET_DISPATCH_P50_MS:g} ms", f"{_s([d['assign_ms']['p50'] for d in dispatch])} ms",
         d50 < TARGET_DISPATCH_P50_MS),
        (f"No-op throughput, {WORKERS} workers x {WORKER_CAPACITY}, {TARGET_CLIENTS} clients",
         f">= {TARGET_JOBS_PER_S:g} jobs/s", f"{_s([p['jobs_per_s'] for p in target])} jobs/s",
         rate >= TARGET_JOBS_PER_S),
        ("WatchJob event latency p99 (ReportProgress sent -> event at the watcher)",
         f"< {TARGET_WATCH_P99_MS:g} ms", f"{_s([w['event_ms']['p99'] for w in watch])} ms",
         w99 < TARGET_WATCH_P99_MS),
    ]  # fmt: skip
    everything = [*dispatch, *watch, *(p for ps in points.values() for p in ps)]
    errors = sum(r["errors"] for r in everything)
    valid = errors == 0
    met = all(ok for *_, ok in checks)
    verdict = "PASS" if met else "FAIL"
    if not valid:
        verdict = f"INVALID ({errors} failed calls or checks; the numbers do not count)"
    target_table = markdown_table(
        ["measurement", "target", f"measured (median [min–max] of {runs})", "verdict"],
        [[m, t, v, "PASS" if ok else "**FAIL**"] for m, t, v, ok in checks],
    )
    header = ["", "samples", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"]
    dispatch_table = markdown_table(header, [
        _row("create_and_dispatch called -> assignment received", [d["assign_ms"] for d in dispatch]),
        _row("create_and_dispatch call (its response)", [d["create_rpc_ms"] for d in dispatch]),
        _row("RegisterOutputs(commit) call", [d["complete_rpc_ms"] for d in dispatch]),
    ])  # fmt: skip
    watch_table = markdown_table(header, [
        _row("ReportProgress sent -> event at the watcher", [w["event_ms"] for w in watch]),
        _row("ReportProgress call", [w["report_rpc_ms"] for w in watch]),
    ])  # fmt: skip
    tp_rows, stage_rows = [], []
    for clients, results in points.items():
        tp_rows.append([str(clients), _s([p["completed"] for p in results], 0), _s([p["jobs_per_s"] for p in results])]
                       + [_s([p["latency_ms"][k] for p in results]) for k in ("p50", "p90", "p99", "max")]
                       + [_errors(results)])  # fmt: skip
        stages = ("create_rpc", "to_start", "start_to_end", "end_to_client")
        stage_rows.append([str(clients)] + [_s([p["stages_ms"][k]["p50"] for p in results]) for k in stages])
    tp_table = markdown_table(
        ["clients", "jobs completed in window", "jobs/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"], tp_rows
    )
    stage_table = markdown_table(
        [
            "clients",
            "create_and_dispatch call",
            "call -> job RUNNING (start_time)",
            "RUNNING -> SUCCEEDED (end_time)",
            "SUCCEEDED -> client sees the end",
        ],
        stage_rows,
    )
    dispatch_rates = [d["assign_ms"]["n"] / d["window_s"] if d["window_s"] else 0.0 for d in dispatch]
    watch_rates = [w["reports"] / w["window_s"] if w["window_s"] else 0.0 for w in watch]
    cpu_rows = [
        _cpu_row(f"dispatch latency ({_med(dispatch_rates):.0f} jobs/s)", dispatch, dispatch_rates),
        _cpu_row(f"watch latency ({_med(watch_rates):.0f} reports/s)", watch, watch_rates),
    ]
    cpu_rows += [_cpu_row(f"throughput, {c} clients ({_med([p['jobs_per_s'] for p in ps]):.0f} jobs/s)", ps,
                          [p["jobs_per_s"] for p in ps]) for c, ps in points.items()]  # fmt: skip
    cpu_table = markdown_table(
        [
            "measurement",
            "server",
            "workers",
            "PostgreSQL",
            "PG background",
            "load",
            "other",
            "machine",
            "server ms/job",
            "workers ms/job",
            "PostgreSQL ms/job",
            "load ms/job",
        ],
        cpu_rows,
    )
    server_cores = _med([p["cpu"].get("server", float("nan")) for p in target])
    machine_cores = _med([p["cpu"].get("machine", float("nan")) for p in target])
    system_cores = _med([sum(p["cpu"].get(g, 0.0) for g in ("server", "workers", "postgres", "pg_background"))
                         for p in target])  # fmt: skip
    ceilings = {"server": float("nan"), "machine": float("nan")}
    if rate and server_cores == server_cores and server_cores:
        ceilings["server"] = rate / server_cores
        ceilings["machine"] = context["cpus"] * rate / system_cores
    where = where_time_goes(target)
    rpc_table = markdown_table(
        ["RPC (operation)", "calls", "per job", "server p50 ms", "server mean ms", "DB ms/call", "DB uses/call"],
        [[r["rpc"], str(r["calls"]), _f(r["per_job"], 2), _f(r["p50_ms"], 2), _f(r["mean_ms"], 2),
          _f(r["db_ms"], 2), _f(r["db_uses"], 2)] for r in where["rpcs"]],
    )  # fmt: skip
    busy = ", ".join(f"{k} {v:.2f}" for k, v in where["busy"]) or "-"
    query_lines = [f"- {v:.2f}: `{k}`" for k, v in where["queries"]]
    first_errors = sorted({r["first_error"] for r in everything if r["first_error"]})
    lines = [
        f"Run {context['date']} on {context['machine']}; PostgreSQL {context['pg_version']} ({context['pg_source']}).",
        "",
        "A real `geopera serve` (fresh database, default settings: lease 15 s, heartbeat 3 s, INFO access log, "
        "pool of 16). Clients are grpc.aio in one separate process (`bench/jobs_load.py`) per measurement; "
        "job type `test_noop` (does nothing, registers no output). Dispatch and watch latency use a worker "
        "session held by that client process (WorkerService/Connect with capacity 1), so both timestamps of a "
        "sample come from one clock; no other worker is connected then.",
        "",
        f"Every measurement runs {runs} time(s) (dispatch and watch alternating, then the throughput points "
        "with their order rotated each round); figures are median [min–max] over the runs, each verdict on "
        "the median.",
        "",
        f"**Targets: {verdict}.**",
        "",
        target_table,
        "",
        f"### Dispatch latency ({dispatch[0]['jobs']} sequential jobs per run, first {DISPATCH_WARMUP} not counted)",
        "",
        "One job at a time: the client calls `processing.create_and_dispatch`; the raw worker session receives "
        "the assignment, then completes the job with `RegisterOutputs` (only `commit`, job token); "
        f"{dispatch[0]['pause_ms']:.0f} ms pause between jobs. The assignment arrived before the "
        f"create_and_dispatch response in {sum(d['assigned_before_response'] for d in dispatch)} of "
        f"{sum(d['assign_ms']['n'] for d in dispatch)} samples. Errors: {_errors(dispatch)}.",
        "",
        dispatch_table,
        "",
        f"### End-to-end no-op throughput ({WORKERS} worker processes x capacity {WORKER_CAPACITY})",
        "",
        "`python -m geopera_kernel.worker.main --plugins tests.support.job_plugins,geopera_kernel.worker.plugins "
        f"--capacity {WORKER_CAPACITY}` x {WORKERS}. N closed-loop clients over min(N, 4) connections, "
        f"as {USERS} users "
        f"(client n has user token n % {USERS}: a token holds at most 16 open streams); each calls "
        "`processing.create_and_dispatch` then reads `WatchJob` until the stream ends (it ends after the "
        f"terminal event; SUCCEEDED is checked). {context['warmup']:g} s warm-up, then jobs finishing within "
        f"{context['duration']:g} s are counted; latency = create call to stream end.",
        "",
        tp_table,
        "",
        "Where the time of a job goes (p50 per stage; server timestamps from the job, client wall clock on "
        "the same machine):",
        "",
        stage_table,
        "",
        f"### What caps the throughput ({TARGET_CLIENTS} clients, {runs} run(s) pooled, {where['jobs']} jobs)",
        "",
        f"CPU: the server process used {_f(server_cores, 2)} cores (its asyncio event loop runs on one), the "
        f"machine {_f(machine_cores, 2)} of {context['cpus']}. Ceilings: the server's event loop caps at "
        f"1 core / server CPU per job = {_f(ceilings['server'], 0)} jobs/s; with nothing else running, the "
        f"machine caps at {context['cpus']} cores / (server + workers + PostgreSQL + PG background CPU per job) "
        f"= {_f(ceilings['machine'], 0)} jobs/s (the load generator excluded); the lower applies.",
        "",
        "The server's access log over the measured windows (one line per finished call: streams log when they "
        "end; `DB ms` = wall time holding a pooled connection, which includes waiting for the event loop):",
        "",
        rpc_table,
        "",
        f"PostgreSQL, sampled from `pg_stat_activity` every 10 ms ({where['samples']} samples): on average "
        f"{_f(where['active'], 2)} of this database's backends were active (by wait: {busy}; `CPU` = not "
        f"waiting) and {_f(where['idle_in_tx'], 2)} idle in a transaction. Busiest statements (average "
        "backends on them):",
        "",
        *query_lines,
        "",
        f"### WatchJob event latency ({watch[0]['reports']} progress reports per run, "
        f"{watch[0]['interval_ms']:.0f} ms apart)",
        "",
        "The raw worker holds one job; a WatchJob stream on it (the client's user token); each "
        "`ReportProgress` carries a distinct message; latency = report sent to the watcher receiving the "
        "event with that message. Events seen: "
        + ", ".join(f"{k} {v}" for k, v in sorted(sum((Counter(w["event_types"]) for w in watch), Counter()).items()))
        + f". Errors: {_errors(watch)}.",
        "",
        watch_table,
        "",
        "### CPU",
        "",
        f"Cores used during each measured window (out of {context['cpus']}; medians over the runs): `server` the "
        "server process, `workers` the 4 worker processes, `PostgreSQL` this database's backends, `PG background` "
        "the cluster's background processes (WAL writer, checkpointer, autovacuum; shared with any other "
        "database on the cluster), `load` the client process, `machine` all busy CPU of the machine, "
        "`other` = machine minus the groups (other programs on the machine). ms/job = CPU ms per job "
        "(per report for the watch row).",
        "",
        cpu_table,
    ]
    if context.get("profiled"):
        lines += ["", f"Profiled run: the first {TARGET_CLIENTS}-client throughput run was under py-spy (server "
                  "and one worker; bench/out/jobs_*), which slows it down."]  # fmt: skip
    if first_errors:
        lines += ["", "First errors seen:", "", *(f"- `{e}`" for e in first_errors)]
    summary = (f"{TITLE}: {verdict}: dispatch p50 {_f(d50)} ms, {_s([p['jobs_per_s'] for p in target])} no-op "
               f"jobs/s at {TARGET_CLIENTS} clients, watch p99 {_f(w99)} ms")  # fmt: skip
    return "\n".join(lines), Outcome(NAME, valid=valid, target_met=met, summary=summary)


# -- the bench ---------------------------------------------------------------------


def run(results: Results, options: Options) -> Outcome:
    workers: list[WorkerProcess] = []
    started, machine = utc_now(), machine_line()
    with bench_server("geopera-bench-jobs-", NAME) as bench:
        try:
            server, url, home, tmp = bench.server, bench.url, bench.home, bench.tmp
            pg_version, pg_backends, pg_background = bench.pg_version, bench.pg_backends, bench.pg_background
            tokens = asyncio.run(seed(url, home))
            assert server.process is not None
            server_pid = server.process.pid

            groups: dict[str, PidSource] = {"server": lambda: [server_pid], "postgres": pg_backends,
                                            "pg_background": pg_background}  # fmt: skip
            common = {"target": server.address, "project": PROJECT, "user_token": tokens["user"],
                      "worker_token": tokens["worker"]}  # fmt: skip
            dispatch_spec = {**common, "mode": "dispatch", "warmup_samples": DISPATCH_WARMUP,
                             "samples": DISPATCH_SAMPLES, "pause": 0.01, "time_limit": 40}  # fmt: skip
            watch_spec = {**common, "mode": "watch", "warmup_samples": WATCH_WARMUP, "samples": WATCH_SAMPLES,
                          "interval": WATCH_INTERVAL, "time_limit": 20}  # fmt: skip

            # Before the real workers connect (they would take the jobs).
            def latency(mode: str, index: int) -> dict[str, Any]:
                if mode == "dispatch":
                    print(f"[{NAME}] dispatch latency: {DISPATCH_SAMPLES} sequential jobs", flush=True)
                    d = run_client(dispatch_spec, groups, 60)
                    print(f"[{NAME}]   p50 {_f(d['assign_ms']['p50'])} ms, p99 {_f(d['assign_ms']['p99'])} ms, "
                          f"{d['errors']} errors", flush=True)  # fmt: skip
                    return d
                print(f"[{NAME}] WatchJob latency: {WATCH_SAMPLES} progress reports", flush=True)
                w = run_client(watch_spec, groups, 45)
                print(f"[{NAME}]   p50 {_f(w['event_ms']['p50'])} ms, p99 {_f(w['event_ms']['p99'])} ms, "
                      f"{w['errors']} errors", flush=True)  # fmt: skip
                return w

            latencies = interleave(["dispatch", "watch"], options.runs, latency)

            print(f"[{NAME}] starting {WORKERS} workers", flush=True)
            workers = [
                WorkerProcess(server.address, tokens["worker"], tmp / "workers", capacity=WORKER_CAPACITY,
                              name=f"bench-w{i}", grace=5.0).start()
                for i in range(WORKERS)
            ]  # fmt: skip
            wait_for_workers(server.address, tokens["user"], WORKERS)
            worker_pids = [w.process.pid for w in workers if w.process is not None]
            groups["workers"] = lambda: worker_pids

            def throughput(clients: int, index: int) -> dict[str, Any]:
                profilers: list[Profiler] = []
                if options.profile and clients == TARGET_CLIENTS and index == 0:
                    profilers = [Profiler(server_pid, f"{NAME}_server_{clients}", options.duration),
                                 Profiler(worker_pids[0], f"{NAME}_worker_{clients}", options.duration)]  # fmt: skip
                window = LogWindow(server.log_path)
                sampler = bench.activity_sampler()

                def opened() -> None:
                    window.open()
                    sampler.start()
                    for profiler in profilers:
                        profiler.start()

                def closed() -> None:
                    sampler.stop()
                    window.close()

                spec = {**common, "mode": "throughput", "concurrency": clients, "warmup": options.warmup,
                        "user_tokens": tokens["users"].split(","),
                        "duration": options.duration, "drain_seconds": 20}  # fmt: skip
                p = run_client(spec, groups, options.warmup + options.duration + 60,
                               on_measure_start=opened, on_measure_end=closed)  # fmt: skip
                for profiler in profilers:
                    profiler.finish()
                p["access"] = [{k: line[k] for k in ("rpc", "operation", "duration_ms", "db_ms", "db_uses")
                                if k in line} for line in window.lines(b'"logger":"geopera.access"')]  # fmt: skip
                p["activity"] = {"samples": sampler.samples, "busy": dict(sampler.busy),
                                 "states": dict(sampler.states), "queries": dict(sampler.queries)}  # fmt: skip
                latency_ms = p["latency_ms"]
                print(f"[{NAME}]   run {index + 1}, {clients} clients: {_f(p['jobs_per_s'])} jobs/s, "
                      f"p50 {_f(latency_ms['p50'])} ms, p99 {_f(latency_ms['p99'])} ms, {p['errors']} errors",
                      flush=True)  # fmt: skip
                return p

            points = interleave(list(CLIENTS), options.runs, throughput)

            for process in (server, *workers):
                if process.process is not None and process.process.poll() is not None:
                    raise RuntimeError(f"a process exited during the bench:\n{process.log()[-4000:]}")

            context = {
                "date": started, "machine": machine, "pg_version": pg_version,
                "pg_source": "GEOPERA_TEST_DATABASE_URL" if os.environ.get("GEOPERA_TEST_DATABASE_URL")
                else "embedded, GEOPERA_TEST_DATABASE_URL unset",
                "cpus": len(os.sched_getaffinity(0)), "profiled": options.profile,
                "warmup": options.warmup, "duration": options.duration, "runs": options.runs,
            }  # fmt: skip
            body, outcome = report(latencies["dispatch"], latencies["watch"], points, context)
            results.set_section(TITLE, body)
            print(f"\n## {TITLE}\n\n{body}\n", flush=True)
            return outcome
        finally:
            for worker in workers:
                worker.stop(timeout=15)
