"""Processing jobs: dispatch latency, WatchJob event latency and end-to-end
no-op throughput with real worker processes.

Processes besides this driver: `geopera serve` on a fresh database (default
settings), four `python -m worker.main` processes (test plugins, for the
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
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2

from bench.harness import REPO, Options, Outcome, cpu_seconds
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

TARGET_DISPATCH_P50_MS = 25.0
TARGET_JOBS_PER_S = 100.0
TARGET_WATCH_P99_MS = 100.0

PidSource = Callable[[], list[int]]
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- setup ---------------------------------------------------------------------


async def seed(url: str, home: Path) -> dict[str, str]:
    """Project `bench` with plenty of credits, a user token on it and a worker token."""
    from server.app import build_services
    from server.auth import USER_SCOPES
    from server.config import Settings

    services = await build_services(Settings(database_url=url, home=home, db_pool_size=2), url)
    try:
        await services.catalog.create_project(PROJECT, "Bench")
        await services.credits.grant(PROJECT, CREDITS, "bench grant")
        _, user = await services.tokens.create_token(
            name="bench-user", kind="user", scopes=list(USER_SCOPES), project_ids=[PROJECT]
        )
        _, worker = await services.tokens.create_token(
            name="bench-worker", kind="worker", scopes=["worker"], project_ids=[], job_type_ids=granted_test_job_types()
        )
        return {"user": user, "worker": worker}
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


def run_client(spec: dict[str, Any], groups: dict[str, PidSource], time_limit: float,
               on_measure_start: Callable[[], None] | None = None) -> dict[str, Any]:
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
            elif line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
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


def _row(label: str, s: dict[str, float]) -> list[str]:
    return [label, str(s["n"]), _f(s["p50"]), _f(s["p90"]), _f(s["p99"]), _f(s["max"]), _f(s["mean"])]


def _errors(result: dict[str, Any]) -> str:
    if not result["errors"]:
        return "0"
    codes = ", ".join(f"{k}×{v}" for k, v in sorted(result["error_codes"].items()))
    return f"**{result['errors']}** ({codes})"


CPU_GROUPS = ("server", "workers", "postgres", "pg_background", "load", "other", "machine")


def _cpu_row(label: str, result: dict[str, Any], per: float | None) -> list[str]:
    cpu = result["cpu"]
    cells = [label] + [_f(cpu[g], 2) if g in cpu else "-" for g in CPU_GROUPS]
    for group in ("server", "workers", "postgres", "load"):
        cells.append(_f(cpu[group] / per * 1000, 2) if per and group in cpu else "-")
    return cells


def report(dispatch: dict[str, Any], watch: dict[str, Any], points: dict[int, dict[str, Any]],
           context: dict[str, Any]) -> tuple[str, Outcome]:
    target = points[TARGET_CLIENTS]
    d50 = dispatch["assign_ms"]["p50"]
    w99 = watch["event_ms"]["p99"]
    rate = target["jobs_per_s"]
    checks = [
        ("Dispatch latency p50 (create_and_dispatch -> assignment at the worker)",
         f"< {TARGET_DISPATCH_P50_MS:g} ms", f"{_f(d50)} ms", d50 < TARGET_DISPATCH_P50_MS),
        (f"No-op throughput, {WORKERS} workers x {WORKER_CAPACITY}, {TARGET_CLIENTS} clients",
         f">= {TARGET_JOBS_PER_S:g} jobs/s", f"{_f(rate)} jobs/s", rate >= TARGET_JOBS_PER_S),
        ("WatchJob event latency p99 (ReportProgress sent -> event at the watcher)",
         f"< {TARGET_WATCH_P99_MS:g} ms", f"{_f(w99)} ms", w99 < TARGET_WATCH_P99_MS),
    ]  # fmt: skip
    errors = dispatch["errors"] + watch["errors"] + sum(p["errors"] for p in points.values())
    valid = errors == 0
    met = all(ok for *_, ok in checks)
    verdict = "PASS" if met else "FAIL"
    if not valid:
        verdict = f"INVALID ({errors} failed calls or checks; the numbers do not count)"
    target_table = markdown_table(
        ["measurement", "target", "measured", "verdict"],
        [[m, t, v, "PASS" if ok else "**FAIL**"] for m, t, v, ok in checks],
    )
    header = ["", "samples", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"]
    dispatch_table = markdown_table(header, [
        _row("create_and_dispatch called -> assignment received", dispatch["assign_ms"]),
        _row("create_and_dispatch call (its response)", dispatch["create_rpc_ms"]),
        _row("RegisterOutputs(commit) call", dispatch["complete_rpc_ms"]),
    ])  # fmt: skip
    watch_table = markdown_table(header, [
        _row("ReportProgress sent -> event at the watcher", watch["event_ms"]),
        _row("ReportProgress call", watch["report_rpc_ms"]),
    ])  # fmt: skip
    tp_rows, stage_rows = [], []
    for clients, point in points.items():
        lat = point["latency_ms"]
        tp_rows.append([str(clients), str(point["completed"]), _f(point["jobs_per_s"]), _f(lat["p50"]),
                        _f(lat["p90"]), _f(lat["p99"]), _f(lat["max"]), _errors(point)])  # fmt: skip
        st = point["stages_ms"]
        stage_rows.append([str(clients)] + [_f(st[k]["p50"]) for k in ("create_rpc", "to_start", "start_to_end",
                                                                         "end_to_client")])  # fmt: skip
    tp_table = markdown_table(
        ["clients", "jobs completed in window", "jobs/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"], tp_rows
    )
    stage_table = markdown_table(
        ["clients", "create_and_dispatch call", "call -> job RUNNING (start_time)",
         "RUNNING -> SUCCEEDED (end_time)", "SUCCEEDED -> client sees the end"],
        stage_rows,
    )
    dispatch_per_s = dispatch["assign_ms"]["n"] / context["dispatch_window"] if context["dispatch_window"] else 0
    watch_per_s = watch["reports"] / context["watch_window"] if context["watch_window"] else 0
    cpu_rows = [
        _cpu_row(f"dispatch latency ({dispatch_per_s:.0f} jobs/s)", dispatch, dispatch_per_s),
        _cpu_row(f"watch latency ({watch_per_s:.0f} reports/s)", watch, watch_per_s),
    ]
    cpu_rows += [_cpu_row(f"throughput, {c} clients ({p['jobs_per_s']:.0f} jobs/s)", p, p["jobs_per_s"])
                 for c, p in points.items()]  # fmt: skip
    cpu_table = markdown_table(
        ["measurement", "server", "workers", "PostgreSQL", "PG background", "load", "other", "machine",
         "server ms/job", "workers ms/job", "PostgreSQL ms/job", "load ms/job"],
        cpu_rows,
    )
    cpu, per_s = target["cpu"], target["jobs_per_s"]
    ceilings = {"server": float("nan"), "machine": float("nan")}
    if per_s and cpu.get("server"):
        ceilings["server"] = per_s / cpu["server"]
        system = sum(cpu.get(g, 0.0) for g in ("server", "workers", "postgres", "pg_background"))
        ceilings["machine"] = context["cpus"] * per_s / system
    first_errors = sorted({r["first_error"] for r in (dispatch, watch, *points.values()) if r["first_error"]})
    lines = [
        f"Run {context['date']} on {context['machine']}; PostgreSQL {context['pg_version']} "
        f"({context['pg_source']}).",
        "",
        "A real `geopera serve` (fresh database, default settings: lease 15 s, heartbeat 3 s, INFO access log, "
        "pool of 16). Clients are grpc.aio in one separate process (`bench/jobs_load.py`) per measurement; "
        "job type `test_noop` (does nothing, registers no output). Dispatch and watch latency use a worker "
        "session held by that client process (WorkerService/Connect with capacity 1), so both timestamps of a "
        "sample come from one clock; no other worker is connected then.",
        "",
        f"**Targets: {verdict}.**",
        "",
        target_table,
        "",
        f"### Dispatch latency ({dispatch['jobs']} sequential jobs, first {DISPATCH_WARMUP} not counted)",
        "",
        "One job at a time: the client calls `processing.create_and_dispatch`; the raw worker session receives "
        "the assignment, then completes the job with `RegisterOutputs` (only `commit`, job token); "
        f"{dispatch['pause_ms']:.0f} ms pause between jobs. The assignment arrived before the "
        f"create_and_dispatch response in {dispatch['assigned_before_response']} of "
        f"{dispatch['assign_ms']['n']} samples. Errors: {_errors(dispatch)}.",
        "",
        dispatch_table,
        "",
        f"### End-to-end no-op throughput ({WORKERS} worker processes x capacity {WORKER_CAPACITY})",
        "",
        f"`python -m worker.main --plugins tests.support.test_plugins,worker.plugins --capacity "
        f"{WORKER_CAPACITY}` x {WORKERS}. N closed-loop clients over min(N, 4) connections; each calls "
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
        f"### WatchJob event latency ({watch['reports']} progress reports, {watch['interval_ms']:.0f} ms apart)",
        "",
        "The raw worker holds one job; a WatchJob stream on it (the client's user token); each "
        "`ReportProgress` carries a distinct message; latency = report sent to the watcher receiving the "
        "event with that message. Events seen: "
        + ", ".join(f"{k} {v}" for k, v in sorted(watch["event_types"].items()))
        + f". Errors: {_errors(watch)}.",
        "",
        watch_table,
        "",
        "### CPU",
        "",
        f"Cores used during each measured window (out of {context['cpus']}): `server` the server process, "
        "`workers` the 4 worker processes, `PostgreSQL` this database's backends, `PG background` the "
        "cluster's background processes (WAL writer, checkpointer, autovacuum; shared with any other "
        "database on the cluster), `load` the client process, `machine` all busy CPU of the machine, "
        "`other` = machine minus the groups (other programs on the machine). ms/job = CPU ms per job "
        "(per report for the watch row).",
        "",
        cpu_table,
        "",
        f"CPU ceilings at the {TARGET_CLIENTS}-client point: the server's one event loop caps at "
        f"1000 / server ms per job = {_f(ceilings['server'], 0)} jobs/s; with nothing else running, the "
        f"machine ({context['cpus']} cores) caps at {context['cpus']} cores / (server + workers + PostgreSQL "
        f"+ PG background ms per job) = {_f(ceilings['machine'], 0)} jobs/s (the load generator excluded); "
        "the lower of the two applies.",
    ]
    if context.get("profiled"):
        lines += ["", f"Profiled run: the {TARGET_CLIENTS}-client throughput point ran under py-spy (server and "
                  "one worker; bench/out/jobs_*), which slows it down."]  # fmt: skip
    if first_errors:
        lines += ["", "First errors seen:", "", *(f"- `{e}`" for e in first_errors)]
    summary = (f"{TITLE}: {verdict}: dispatch p50 {_f(d50)} ms, {_f(rate)} no-op jobs/s at {TARGET_CLIENTS} "
               f"clients, watch p99 {_f(w99)} ms")  # fmt: skip
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

            print(f"[{NAME}] dispatch latency: {DISPATCH_SAMPLES} sequential jobs", flush=True)
            dispatch_spec = {**common, "mode": "dispatch", "warmup_samples": DISPATCH_WARMUP,
                             "samples": DISPATCH_SAMPLES, "pause": 0.01, "time_limit": 40}  # fmt: skip
            dispatch = run_client(dispatch_spec, groups, 60)
            print(f"[{NAME}]   p50 {_f(dispatch['assign_ms']['p50'])} ms, p99 {_f(dispatch['assign_ms']['p99'])} ms, "
                  f"{dispatch['errors']} errors", flush=True)  # fmt: skip

            print(f"[{NAME}] WatchJob latency: {WATCH_SAMPLES} progress reports", flush=True)
            watch = run_client({**common, "mode": "watch", "warmup_samples": WATCH_WARMUP, "samples": WATCH_SAMPLES,
                                "interval": WATCH_INTERVAL, "time_limit": 20}, groups, 45)  # fmt: skip
            print(f"[{NAME}]   p50 {_f(watch['event_ms']['p50'])} ms, p99 {_f(watch['event_ms']['p99'])} ms, "
                  f"{watch['errors']} errors", flush=True)  # fmt: skip

            print(f"[{NAME}] starting {WORKERS} workers", flush=True)
            workers = [
                WorkerProcess(server.address, tokens["worker"], tmp / "workers", capacity=WORKER_CAPACITY,
                              name=f"bench-w{i}", grace=5.0).start()
                for i in range(WORKERS)
            ]  # fmt: skip
            wait_for_workers(server.address, tokens["user"], WORKERS)
            worker_pids = [w.process.pid for w in workers if w.process is not None]
            groups["workers"] = lambda: worker_pids

            points: dict[int, dict[str, Any]] = {}
            for clients in CLIENTS:
                profilers: list[Profiler] = []
                if options.profile and clients == TARGET_CLIENTS:
                    profilers = [Profiler(server_pid, f"{NAME}_server_{clients}", options.duration),
                                 Profiler(worker_pids[0], f"{NAME}_worker_{clients}", options.duration)]  # fmt: skip
                spec = {**common, "mode": "throughput", "concurrency": clients, "warmup": options.warmup,
                        "duration": options.duration, "drain_seconds": 20}  # fmt: skip
                points[clients] = run_client(spec, groups, options.warmup + options.duration + 60,
                                             on_measure_start=lambda ps=profilers: [p.start() for p in ps])  # fmt: skip
                for profiler in profilers:
                    profiler.finish()
                p = points[clients]
                latency = p["latency_ms"]
                print(f"[{NAME}]   {clients} clients: {_f(p['jobs_per_s'])} jobs/s, p50 {_f(latency['p50'])} ms, "
                      f"p99 {_f(latency['p99'])} ms, {p['errors']} errors", flush=True)  # fmt: skip

            for process in (server, *workers):
                if process.process is not None and process.process.poll() is not None:
                    raise RuntimeError(f"a process exited during the bench:\n{process.log()[-4000:]}")

            context = {
                "date": started, "machine": machine, "pg_version": pg_version,
                "pg_source": "GEOPERA_TEST_DATABASE_URL" if os.environ.get("GEOPERA_TEST_DATABASE_URL")
                else "embedded, GEOPERA_TEST_DATABASE_URL unset",
                "cpus": len(os.sched_getaffinity(0)), "profiled": options.profile,
                "warmup": options.warmup, "duration": options.duration,
                "dispatch_window": dispatch["window_s"], "watch_window": watch["window_s"],
            }  # fmt: skip
            body, outcome = report(dispatch, watch, points, context)
            results.set_section(TITLE, body)
            print(f"\n## {TITLE}\n\n{body}\n", flush=True)
            return outcome
        finally:
            for worker in workers:
                worker.stop(timeout=15)
