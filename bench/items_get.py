"""`items.get` through `KernelService/Execute` on the real server vs a bare
grpc.aio echo peer: on one item (the best case: every call hits the token
and item caches) and on a working set of 10,000 items, read
uniformly, Zipf-skewed, in a first pass right after a server start, and
uniformly on a second server whose item cache holds only 40% of the set (the
working set larger than the cache: the miss path's throughput).

Three processes besides this driver: `geopera serve` on a fresh database, the
echo server (`bench.echo`), and one load generator per point (`bench.load`).
Cache hit rates and database time per call come from the server's own access
log (`cache_hits`, `cache_misses`, `db_ms`, see `server/callstats.py`) over each
measured window; CPU from /proc.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import statistics
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psycopg
from google.protobuf import any_pb2

from bench.echo import METHOD as ECHO_METHOD
from bench.echo import EchoProcess
from bench.harness import LogWindow, Options, Outcome, Spread, rotation, run_load, spread
from bench.profile import Profiler
from bench.results import Results, machine_line, markdown_table, utc_now
from bench.server import bench_server
from bench.sql import BQ
from geopera.v1 import catalog_pb2, kernel_pb2, kernel_pb2_grpc
from geopera_kernel.server.config import DEFAULT_ITEM_CACHE_BYTES
from geopera_kernel.server.domain.catalog import RenderedItem, rendered_size
from tests.support.server import ServerProcess

NAME = "items_get"
TITLE = "items.get through Execute vs bare grpc.aio echo"
EXECUTE_METHOD = "/geopera.v1.KernelService/Execute"
CONCURRENCY = (1, 16, 64)
TARGET_CALLERS = 64
TARGET_RATIO = 0.75  # issue 18
WORKING_SET = 10_000
ZIPF_S = 1.0
CACHES = ("token", "item", "item_render")
# The `small` point: a server whose item cache budget holds this share of the working
# set, so most of its calls miss (throughput bound by the miss path, as on a working set
# larger than the memory given to it).
SMALL_CACHE_SHARE = 0.4
# Upper bound for the cold first pass (it ends when every item was asked once).
COLD_PASS_LIMIT_S = 120.0

# (workload, callers): `one` asks one item again and again, `uniform` / `zipf` pick
# from the working set, `cold` is the first pass over it after a server start.
WARM_POINTS: list[tuple[str, int]] = [
    *(("echo", c) for c in CONCURRENCY),
    *(("one", c) for c in CONCURRENCY),
    ("uniform", TARGET_CALLERS),
    ("zipf", TARGET_CALLERS),
]
COLD_POINT = ("cold", TARGET_CALLERS)
SMALL_POINT = ("small", TARGET_CALLERS)
LABELS = {
    "echo": "echo (bare grpc.aio)",
    "one": "Execute, one item",
    "uniform": f"Execute, {WORKING_SET:,} items uniform",
    "zipf": f"Execute, {WORKING_SET:,} items Zipf s={ZIPF_S:g}",
    "cold": f"Execute, {WORKING_SET:,} items cold first pass",
    "small": f"Execute, {WORKING_SET:,} items uniform, cache {SMALL_CACHE_SHARE:.0%} of the set",
}


async def seed(url: str, home: Path, count: int) -> tuple[list[str], str]:
    """([item ids], token) in project `bench`: one item through the domain
    services, then `count - 1` copies of it (new id and name, same document)
    in one SQL statement per table, so seeding takes seconds."""
    from geopera_kernel.server.app import build_services
    from geopera_kernel.server.config import Settings
    from geopera_kernel.server.demo import SYSTEM, sample_items
    from geopera_kernel.server.ids import new_id

    services = await build_services(Settings(database_url=url, home=home, db_pool_size=2), url)
    try:
        await services.catalog.create_project("bench", "Bench")
        _, token = await services.tokens.create_token(
            name="bench", kind="user", scopes=["catalog:read"], project_ids=["bench"]
        )
        spec = dataclasses.replace(sample_items()[0], project_id="bench")
        template = (await services.catalog.create_item(SYSTEM, spec)).id
    finally:
        await services.db.close()
    copies = [new_id("it") for _ in range(count - 1)]
    async with await psycopg.AsyncConnection.connect(url) as conn:
        async with conn.transaction():
            for table, key, renamed in (("items", "id", {"name": "t.name || '-' || n.ord"}), ("assets", "item_id", {})):
                cur = await conn.execute(BQ.table_columns, {"table": table})
                columns = [r[0] for r in await cur.fetchall()]
                values = ["n.id" if c == key else renamed.get(c, f"t.{c}") for c in columns]
                await conn.execute(
                    f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} "
                    f"FROM {table} t, unnest(%(ids)s::text[]) WITH ORDINALITY AS n(id, ord) "
                    f"WHERE t.{key} = %(template)s",
                    {"ids": copies, "template": template},
                )
    return [template, *copies], token


def forget_renders(url: str) -> None:
    """Empty the stored item encodings (`item_renders`, written on an item's first
    read), so a round's cold pass builds every item as on its first read ever."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BQ.forget_item_renders)


def execute_request(item_id: str) -> kernel_pb2.ExecuteRequest:
    request = kernel_pb2.ExecuteRequest(operation="items.get")
    packed = any_pb2.Any()
    packed.Pack(catalog_pb2.ItemsGetParams(item_id=item_id))
    request.params.CopyFrom(packed)
    return request


def sanity_check(
    server: ServerProcess,
    echo: EchoProcess,
    request: kernel_pb2.ExecuteRequest,
    metadata: list[tuple[str, str]],
    item_ids: list[str],
) -> tuple[int, int, int]:
    """One typed call to each peer before loading them (and one Execute on the
    last seeded copy); returns the Execute response's size, the item's asset count
    and its encoded size."""
    with grpc.insecure_channel(server.address) as channel:
        stub = kernel_pb2_grpc.KernelServiceStub(channel)
        response = stub.Execute(request, metadata=metadata, timeout=10)
        copy = stub.Execute(execute_request(item_ids[-1]), metadata=metadata, timeout=10)
    result = catalog_pb2.ItemsGetResult()
    if not response.result.Unpack(result) or result.item.id != item_ids[0]:
        raise RuntimeError(f"items.get returned an unexpected result: {response}")
    copied = catalog_pb2.ItemsGetResult()
    if (
        not copy.result.Unpack(copied)
        or copied.item.id != item_ids[-1]
        or len(copied.item.assets) != len(result.item.assets)
    ):
        raise RuntimeError(f"items.get on a seeded copy returned an unexpected result: {copy}")
    payload = request.SerializeToString()
    with grpc.insecure_channel(echo.address) as channel:
        echoed = channel.unary_unary(ECHO_METHOD)(payload, metadata=metadata, timeout=10)
    if echoed != payload:
        raise RuntimeError("the echo server did not return the request bytes")
    return response.ByteSize(), len(result.item.assets), result.item.ByteSize()


class AccessWindow(LogWindow):
    """The server's access-log lines written during one measured window."""

    def summary(self) -> dict[str, Any]:
        """Per `items.get` call in the window: cache hit rates, database time and
        uses, server-side duration; and the same split by item-cache hit / miss."""
        hits: Counter[str] = Counter()
        misses: Counter[str] = Counter()
        db_ms: list[float] = []
        db_uses = 0
        batches: list[int] = []
        durations: dict[str, list[float]] = {"hit": [], "miss": []}
        db_by: dict[str, list[float]] = {"hit": [], "miss": []}
        for line in self.lines(b'"items.get"'):
            if line.get("rpc") != "Execute" or line.get("operation") != "items.get" or line.get("code") != "OK":
                continue
            hits.update(line.get("cache_hits", ()))
            misses.update(line.get("cache_misses", ()))
            db_ms.append(float(line.get("db_ms", 0.0)))
            db_uses += int(line.get("db_uses", 0))
            kind = "miss" if "item" in line.get("cache_misses", ()) else "hit"
            if kind == "miss" and line.get("db_batch"):
                batches.append(int(line["db_batch"]))
            durations[kind].append(float(line["duration_ms"]))
            db_by[kind].append(float(line.get("db_ms", 0.0)))
        calls = len(db_ms)
        out: dict[str, Any] = {"calls": calls}
        for cache in CACHES:
            looked = hits[cache] + misses[cache]
            out[f"{cache}_hit"] = hits[cache] / looked if looked else float("nan")
        out["db_ms"] = sum(db_ms) / calls if calls else float("nan")
        out["db_uses"] = db_uses / calls if calls else float("nan")
        # Per missed call: how many lookups the batched query it waited on carried.
        out["batch"] = sum(batches) / len(batches) if batches else float("nan")
        for kind in ("hit", "miss"):
            values = durations[kind]
            out[f"{kind}_calls"] = len(values)
            out[f"{kind}_duration_ms"] = statistics.median(values) if values else float("nan")
            out[f"{kind}_db_ms"] = statistics.median(db_by[kind]) if db_by[kind] else float("nan")
        return out


def _fmt(s: Spread, spec: str = ".2f", scale: float = 1.0) -> str:
    return "-" if s.median != s.median else s.fmt(spec, scale)


def _spread(runs: list[dict[str, Any]], get: Callable[[dict[str, Any]], float | None]) -> Spread | None:
    values = [v for r in runs if (v := get(r)) is not None and v == v]
    return Spread.of(values) if values else None


def _cell(s: Spread | None, spec: str = ".2f", scale: float = 1.0) -> str:
    return "-" if s is None else _fmt(s, spec, scale)


def _errors(runs: list[dict[str, Any]]) -> str:
    total = sum(r["errors"] for r in runs)
    if not total:
        return "0"
    codes: Counter[str] = Counter()
    for r in runs:
        codes.update(r["error_codes"])
    return f"**{total}** ({', '.join(f'{k}×{v}' for k, v in sorted(codes.items()))})"


def _per_call_us(point: dict[str, Any], group: str) -> float | None:
    value = point["cpu"].get(group)
    if value is None or not point["rps"]:
        return None
    return value / point["rps"] * 1e6


def report(
    points: dict[tuple[str, int], list[dict[str, Any]]], options: Options, context: dict[str, Any]
) -> tuple[str, Outcome]:
    runs = options.runs

    def ratio(key: tuple[str, int]) -> Spread:
        # Paired by round: run i of a point against run i of echo at the same callers.
        echo_runs = points[("echo", key[1])]
        return Spread.of(x["rps"] / e["rps"] if e["rps"] else 0.0 for x, e in zip(points[key], echo_runs, strict=True))

    order = [
        *(("echo", c) for c in CONCURRENCY),
        *(("one", c) for c in CONCURRENCY),
        ("uniform", TARGET_CALLERS),
        ("zipf", TARGET_CALLERS),
        COLD_POINT,
        SMALL_POINT,
    ]
    rows, server_rows = [], []
    total_errors = 0
    for key in order:
        workload, callers = key
        pts = points[key]
        total_errors += sum(p["errors"] for p in pts)
        rows.append(
            [
                LABELS[workload],
                str(callers),
                _fmt(spread(pts, "rps"), ".0f"),
                _fmt(spread(pts, "p50_ms")),
                _fmt(spread(pts, "p99_ms")),
                _errors(pts),
                "-" if workload == "echo" else _fmt(ratio(key), ".1%"),
            ]
        )
        group = "echo" if workload == "echo" else "server"
        cpu = [_cell(_spread(pts, lambda p, g=group: _per_call_us(p, g)), ".0f")]
        if workload == "echo":
            server_rows.append([LABELS[workload], str(callers), "-", "-", "-", "-", "-", "-", "-", "-", *cpu, "-"])
            continue
        server_rows.append(
            [
                LABELS[workload],
                str(callers),
                *(_cell(_spread(pts, lambda p, c=c: p["access"][f"{c}_hit"]), ".1%") for c in CACHES),
                _cell(_spread(pts, lambda p: p["access"]["db_uses"])),
                _cell(_spread(pts, lambda p: p["access"]["db_ms"]), ".3f"),
                _cell(_spread(pts, lambda p: p["access"]["batch"]), ".1f"),
                _cell(_spread(pts, lambda p: p["access"]["hit_duration_ms"])),
                _cell(_spread(pts, lambda p: p["access"]["miss_duration_ms"])),
                *cpu,
                _cell(_spread(pts, lambda p: _per_call_us(p, "postgres")), ".0f"),
            ]
        )
    target = ratio(("uniform", TARGET_CALLERS))
    best_case = ratio(("one", TARGET_CALLERS))
    valid = total_errors == 0
    met = target.median >= TARGET_RATIO
    if not valid:
        verdict = f"INVALID: {total_errors} calls failed (see the errors column); the numbers do not count"
    else:
        verdict = "PASS" if met else "FAIL"
    first_errors = sorted({p["first_error"] for pts in points.values() for p in pts if p["first_error"]})
    cold = points[COLD_POINT]
    miss_split = [p["access"] for p in points[SMALL_POINT]]
    lines = [
        f"Run {context['date']} on {context['machine']}; PostgreSQL {context['pg_version']} ({context['pg_source']}).",
        "",
        f"`geopera.v1.KernelService/Execute` with operation `items.get` (a `catalog:read` bearer token; items "
        f"with {context['assets']} asset(s), {context['response_bytes']} B responses) on a real `geopera serve` "
        f"process (fresh database, default settings: INFO access log, pool of 16, items held encoded in memory "
        f"up to {context['cache_budget'] / 2**20:,.0f} MiB (`GEOPERA_ITEM_CACHE_BYTES`: the whole working set fits), "
        f"token cache 5 s), against a bare grpc.aio echo handler in its own process with "
        f"the same server options and runtime settings (`gc.freeze()` once started). Workloads: **one item** "
        f"asked again and again (the best case: every call hits every cache); a **working set of "
        f"{WORKING_SET:,} items** (one created through the domain services, the "
        f"others SQL copies of it with their own ids and names) read **uniformly** or **Zipf-skewed** "
        f"(rank r with weight 1/r^{ZIPF_S:g}, ranks shuffled); and a **cold first pass**: a fresh server "
        f"process, then each of the {WORKING_SET:,} items asked once in random order, all of it measured "
        f"(no warm-up); and the working set **larger than the cache**: uniform again, on a second server "
        f"process whose `GEOPERA_ITEM_CACHE_BYTES` is {context['small_budget'] / 2**20:.1f} MiB, "
        f"{SMALL_CACHE_SHARE:.0%} of the set's cached size, so most calls miss (before its warm-up, one "
        f"unmeasured pass over the set in random order fills its cache). "
        f"One grpc.aio load-generator process, N closed-loop callers over min(N, 4) "
        f"connections, {options.warmup:g} s warm-up then {options.duration:g} s measured per warm point. "
        f"The echo peer gets the request's exact bytes ({context['request_bytes']} B) and the same metadata. "
        f"Every Execute response is checked (status OK, operation `items.get`, an `ItemsGetResult` "
        f"holding the id asked for); errors count warm-up calls too.",
        "",
        f"Each round restarts the server, runs the cold pass, then every warm point once (the order rotated "
        f"each round), then the larger-than-the-cache point on its own server; {runs} round(s). Figures are "
        f"median [min–max] over the {runs} run(s) of each point; "
        f"ratios pair a point with the echo run of the same round.",
        "",
        f"**Target: Execute throughput >= {TARGET_RATIO:.0%} of echo at {TARGET_CALLERS} callers on the "
        f"{WORKING_SET:,}-item working set, uniform access: {verdict} ({_fmt(target, '.1%')}).** "
        f"For reference, the one-item best case: {_fmt(best_case, '.1%')}.",
        "",
        markdown_table(["workload", "callers", "req/s", "p50 ms", "p99 ms", "errors", "/ echo"], rows),
        "",
        "Inside the server, per `items.get` call in each measured window, from its access log: hit rate of "
        "each cache; database uses (a pooled connection held) and the wall time they held it (query round "
        "trips, i.e. the database time the call waited on; a batched lookup's time counts for each call it "
        "served); lookups per query: for the calls that missed, how many calls' lookups the batched query "
        "they waited on carried (concurrent misses share one `= ANY(...)` query); the server's own call "
        "duration (median) when the item cache hit and when it missed; the stored render hit rate is per "
        "item-cache miss (a miss reads the item's encoding stored in `item_renders`, written on the item's "
        "first read); and CPU µs per call of the server (or echo) process and of this database's PostgreSQL "
        "backends (/proc; per completed call).",
        "",
        markdown_table(
            [
                "workload",
                "callers",
                "token cache hit",
                "item cache hit",
                "stored render hit",
                "DB uses/call",
                "DB ms/call",
                "lookups per query",
                "server ms, item hit",
                "server ms, item miss",
                "server (echo) CPU µs/call",
                "PostgreSQL CPU µs/call",
            ],
            server_rows,
        ),
        "",
        f"Cold first pass: {_fmt(spread(cold, 'ok'), '.0f')} calls in {_fmt(spread(cold, 'duration_s'))} s "
        f"(a fresh process: imports done, but no connection, cache or prepared statement warm; and no item's "
        f"encoding stored yet, so each item is built from its rows and its encoding stored, the concurrent "
        f"first reads in one batch: the cost of an item's first read ever; a restart with the encodings stored "
        f"skips that).",
    ]
    if miss_split:
        hit_ms = _spread(miss_split, lambda a: a["hit_duration_ms"])
        miss_ms = _spread(miss_split, lambda a: a["miss_duration_ms"])
        miss_db = _spread(miss_split, lambda a: a["miss_db_ms"])
        batch = _spread(miss_split, lambda a: a["batch"])
        item_hit = _spread(miss_split, lambda a: a["item_hit"])
        uniform_hit = _spread([p["access"] for p in points[("uniform", TARGET_CALLERS)]], lambda a: a["item_hit"])
        lines += [
            "",
            f"Where the time goes. On the {WORKING_SET:,}-item set with the default budget the whole set is held "
            f"after the cold pass (uniform item cache hit {_cell(uniform_hit, '.1%')}): a call is the hit path, "
            f"the token and the item from memory, the item's stored bytes sent as they are (never parsed into a "
            f"message and serialized again); what remains beside echo is the gRPC handler, authentication, "
            f"params decoding and the access log line. On the set larger than the cache "
            f"({_cell(item_hit, '.1%')} of calls hit): a hit takes {_cell(hit_ms)} ms in the server, a miss "
            f"{_cell(miss_ms)} ms, of which {_cell(miss_db, '.3f')} ms waiting on the batched lookup of the "
            f"stored encodings ({_cell(batch, '.1f')} calls' lookups per query; wall time, event-loop turns "
            f"included); misses no longer parse bytes either. Only an item's first read ever builds it (the "
            f"`item_documents` query, JSON to `ItemRecord` to proto, the render stored): the cold pass. "
            f"Throughput on a working set larger than the memory given to the cache is set by the miss.",
        ]
    if context.get("profiled"):
        lines += [
            "",
            f"Profiled run: the {TARGET_CALLERS}-caller uniform Execute point of the first round ran "
            "under py-spy (bench/out/), which slows it down; do not compare it with unprofiled runs.",
        ]
    if first_errors:
        lines += ["", "First errors seen:", "", *(f"- `{e}`" for e in first_errors)]
    outcome = Outcome(
        NAME,
        valid=valid,
        target_met=met,
        summary=f"{TITLE}: {verdict}, Execute/echo at {TARGET_CALLERS} callers on {WORKING_SET:,} items uniform "
        f"= {_fmt(target, '.1%')} (one item: {_fmt(best_case, '.1%')})",
    )
    return "\n".join(lines), outcome


def run(results: Results, options: Options) -> Outcome:
    echo: EchoProcess | None = None
    started, machine = utc_now(), machine_line()
    with bench_server("geopera-bench-", NAME) as bench:
        try:
            server, url, home, tmp = bench.server, bench.url, bench.home, bench.tmp
            pg_version, pg_backends = bench.pg_version, bench.pg_backends
            print(f"[{NAME}] seeding {WORKING_SET:,} items", flush=True)
            item_ids, token = asyncio.run(seed(url, home, WORKING_SET))
            echo = EchoProcess(tmp / "echo").start()

            request = execute_request(item_ids[0])
            metadata = [("authorization", "Bearer " + token)]
            response_bytes, assets, item_bytes = sanity_check(server, echo, request, metadata, item_ids)
            # What the whole set takes in the item cache, by the server's own accounting.
            set_cached = sum(rendered_size(i, RenderedItem("bench", b"\0" * item_bytes)) for i in item_ids)
            small_budget = int(SMALL_CACHE_SHARE * set_cached)
            small = ServerProcess(
                database_url=url, home=tmp / "small-cache", extra_env={"GEOPERA_ITEM_CACHE_BYTES": str(small_budget)}
            )
            payload_hex = request.SerializeToString().hex()
            set_hex = [execute_request(i).SerializeToString().hex() for i in item_ids]
            assert echo.process is not None
            echo_pid = echo.process.pid
            common = {"metadata": metadata, "warmup": options.warmup, "duration": options.duration}
            execute_spec = {
                "method": EXECUTE_METHOD,
                "check": "execute",
                "expect_operation": "items.get",
                "expect_result_type": "geopera.v1.ItemsGetResult",
            }
            rng = random.Random(17)
            ranked = item_ids[:]
            rng.shuffle(ranked)  # Zipf ranks: which items are hot is random, not creation order
            position = {item_id: index for index, item_id in enumerate(item_ids)}

            def spec_for(workload: str, callers: int, round_index: int) -> dict[str, Any]:
                if workload == "echo":
                    return {
                        **common,
                        "target": echo.address,
                        "method": ECHO_METHOD,
                        "check": "echo",
                        "payload_hex": payload_hex,
                        "concurrency": callers,
                    }
                target = small if workload == "small" else server
                spec = {
                    **common,
                    **execute_spec,
                    "target": target.address,
                    "concurrency": callers,
                    "seed": 1000 + round_index,
                }
                if workload == "one":
                    return {**spec, "payload_hex": payload_hex, "expect_in_response": [item_ids[0]]}
                ids = ranked if workload == "zipf" else item_ids
                spec = {
                    **spec,
                    "payloads_hex": [set_hex[position[i]] for i in ids],
                    "expect_in_response": ids,
                    "pick": {"uniform": "uniform", "small": "uniform", "zipf": "zipf", "cold": "sequence"}[workload],
                    "zipf_s": ZIPF_S,
                }
                if workload == "cold":
                    order = list(range(len(item_ids)))
                    random.Random(2000 + round_index).shuffle(order)
                    spec.update(
                        payloads_hex=[set_hex[i] for i in order],
                        expect_in_response=[item_ids[i] for i in order],
                        warmup=0.0,
                        duration=COLD_PASS_LIMIT_S,
                        max_requests=len(order),
                    )
                return spec

            points: dict[tuple[str, int], list[dict[str, Any]]] = {
                COLD_POINT: [],
                SMALL_POINT: [],
                **{k: [] for k in WARM_POINTS},
            }

            def measure(key: tuple[str, int], round_index: int) -> None:
                workload, callers = key
                spec = spec_for(workload, callers, round_index)
                if workload == "echo":
                    point = run_load(spec, {"echo": lambda: [echo_pid]})
                else:
                    measured = small if workload == "small" else server
                    assert measured.process is not None
                    server_pid = measured.process.pid
                    window = AccessWindow(measured.log_path)
                    profiler = None
                    if options.profile and key == ("uniform", TARGET_CALLERS) and round_index == 0:
                        profiler = Profiler(server_pid, f"{NAME}_uniform_{callers}", options.duration)

                    def opened(profiler: Profiler | None = profiler, window: AccessWindow = window) -> None:
                        window.open()
                        if profiler is not None:
                            profiler.start()

                    point = run_load(
                        spec,
                        {"server": lambda: [server_pid], "postgres": pg_backends},
                        on_measure_start=opened,
                        on_measure_end=window.close,
                    )
                    if profiler is not None:
                        profiler.finish()
                    point["access"] = window.summary()
                points[key].append(point)
                extra = ""
                if "access" in point:
                    access = point["access"]
                    extra = f", item cache hit {access['item_hit']:.1%}, DB {access['db_ms']:.3f} ms/call"
                print(
                    f"[{NAME}] round {round_index + 1} {workload:>7} {callers:>3} callers: {point['rps']:.0f} req/s "
                    f"({point['errors']} errors){extra}",
                    flush=True,
                )

            for round_index in range(options.runs):
                server.stop()  # every round starts on a fresh server process: empty caches
                forget_renders(url)  # and its cold pass is every item's first read ever
                server.start(timeout=60)
                measure(COLD_POINT, round_index)
                for key in rotation(WARM_POINTS, round_index):
                    measure(key, round_index)
                small.start(timeout=60)
                try:
                    # Unmeasured: one pass over the set in random order leaves the cache full
                    # (the steady state of uniform reads), however fast this machine is now.
                    assert small.process is not None
                    small_pid = small.process.pid
                    fill = run_load(
                        {**spec_for("cold", TARGET_CALLERS, round_index), "target": small.address},
                        {"server": lambda pid=small_pid: [pid]},
                    )
                    if fill["errors"]:
                        raise RuntimeError(f"filling the small cache failed: {fill['first_error']}")
                    measure(SMALL_POINT, round_index)
                finally:
                    small.stop()
            assert server.process is not None
            if server.process.poll() is not None:
                raise RuntimeError(f"the server exited during the bench:\n{server.log()[-4000:]}")

            context = {
                "date": started,
                "machine": machine,
                "pg_version": pg_version,
                "pg_source": "GEOPERA_TEST_DATABASE_URL"
                if os.environ.get("GEOPERA_TEST_DATABASE_URL")
                else "embedded, GEOPERA_TEST_DATABASE_URL unset",
                "profiled": options.profile,
                "request_bytes": len(payload_hex) // 2,
                "response_bytes": response_bytes,
                "assets": assets,
                "cache_budget": DEFAULT_ITEM_CACHE_BYTES,
                "small_budget": small_budget,
            }
            body, outcome = report(points, options, context)
            results.set_section(TITLE, body)
            print(f"\n## {TITLE}\n\n{body}\n", flush=True)
            return outcome
        finally:
            if echo is not None:
                echo.stop()
