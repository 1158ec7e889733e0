"""`items.get` through `KernelService/Execute` on the real server vs a bare
grpc.aio echo peer, at 1, 16 and 64 concurrent callers.

Three processes besides this driver: `geopera serve` on a fresh database, the
echo server (`bench.echo`), and one load generator per point (`bench.load`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2

from bench.echo import METHOD as ECHO_METHOD
from bench.echo import EchoProcess
from bench.harness import Options, Outcome, run_load
from bench.profile import Profiler
from bench.results import Results, machine_line, markdown_table, utc_now
from bench.server import bench_server
from geopera.v1 import catalog_pb2, kernel_pb2, kernel_pb2_grpc
from tests.support.server import ServerProcess

NAME = "items_get"
TITLE = "items.get through Execute vs bare grpc.aio echo"
EXECUTE_METHOD = "/geopera.v1.KernelService/Execute"
CONCURRENCY = (1, 16, 64)
TARGET_CALLERS = 64
TARGET_RATIO = 0.40


async def seed(url: str, home: Path) -> tuple[str, str]:
    """(item id, token) in project `bench`, through the domain services."""
    from server.app import build_services
    from server.config import Settings
    from server.demo import SYSTEM, sample_items

    services = await build_services(Settings(database_url=url, home=home), url)
    try:
        await services.catalog.create_project("bench", "Bench")
        _, token = await services.tokens.create_token(
            name="bench", kind="user", scopes=["catalog:read"], project_ids=["bench"]
        )
        spec = dataclasses.replace(sample_items()[0], project_id="bench")
        item = await services.catalog.create_item(SYSTEM, spec)
        return item.id, token
    finally:
        await services.db.close()


def sanity_check(server: ServerProcess, echo: EchoProcess, request: kernel_pb2.ExecuteRequest,
                 metadata: list[tuple[str, str]], item_id: str) -> tuple[int, int]:
    """One typed call to each peer before loading them; returns the Execute
    response's size and the item's asset count."""
    with grpc.insecure_channel(server.address) as channel:
        response = kernel_pb2_grpc.KernelServiceStub(channel).Execute(request, metadata=metadata, timeout=10)
    result = catalog_pb2.ItemsGetResult()
    if not response.result.Unpack(result) or result.item.id != item_id:
        raise RuntimeError(f"items.get returned an unexpected result: {response}")
    payload = request.SerializeToString()
    with grpc.insecure_channel(echo.address) as channel:
        echoed = channel.unary_unary(ECHO_METHOD)(payload, metadata=metadata, timeout=10)
    if echoed != payload:
        raise RuntimeError("the echo server did not return the request bytes")
    return response.ByteSize(), len(result.item.assets)


def _ms(value: float) -> str:
    return f"{value:.2f}" if value == value else "-"


def _cpu(point: dict[str, Any], group: str) -> str:
    value = point["cpu"].get(group)
    return "-" if value is None else f"{value:.2f}"


def _per_call_us(point: dict[str, Any], group: str) -> str:
    value = point["cpu"].get(group)
    if value is None or not point["rps"]:
        return "-"
    return f"{value / point['rps'] * 1e6:.0f}"


def _errors(point: dict[str, Any]) -> str:
    if not point["errors"]:
        return "0"
    codes = ", ".join(f"{k}×{v}" for k, v in sorted(point["error_codes"].items()))
    return f"**{point['errors']}** ({codes})"


def report(points: dict[tuple[str, int], dict[str, Any]], options: Options, context: dict[str, Any]
           ) -> tuple[str, Outcome]:
    rows = []
    cpu_rows = []
    ratios: dict[int, float] = {}
    total_errors = 0
    for callers in CONCURRENCY:
        echo, execute = points[("echo", callers)], points[("execute", callers)]
        ratio = execute["rps"] / echo["rps"] if echo["rps"] else 0.0
        ratios[callers] = ratio
        total_errors += echo["errors"] + execute["errors"]
        rows.append([
            str(callers),
            f"{echo['rps']:.0f}", _ms(echo["p50_ms"]), _ms(echo["p99_ms"]), _errors(echo),
            f"{execute['rps']:.0f}", _ms(execute["p50_ms"]), _ms(execute["p99_ms"]), _errors(execute),
            f"{ratio:.1%}",
        ])
        for peer, point, group in (("echo", echo, "echo"), ("Execute", execute, "server")):
            cpu_rows.append([
                str(callers), peer, _cpu(point, group),
                _cpu(point, "postgres") if peer == "Execute" else "-",
                _cpu(point, "loadgen"), _per_call_us(point, group),
                _per_call_us(point, "postgres") if peer == "Execute" else "-",
                _per_call_us(point, "loadgen"),
            ])
    table = markdown_table(
        ["callers", "echo req/s", "echo p50 ms", "echo p99 ms", "echo errors",
         "Execute req/s", "Execute p50 ms", "Execute p99 ms", "Execute errors", "Execute / echo"],
        rows,
    )
    cpu_table = markdown_table(
        ["callers", "peer", "server cores", "PostgreSQL cores", "loadgen cores",
         "server µs/call", "PostgreSQL µs/call", "loadgen µs/call"],
        cpu_rows,
    )
    ratio = ratios[TARGET_CALLERS]
    valid = total_errors == 0
    met = ratio >= TARGET_RATIO
    if not valid:
        verdict = f"INVALID: {total_errors} calls failed (see the errors columns); the numbers do not count"
    else:
        verdict = "PASS" if met else "FAIL"
    first_errors = sorted({p["first_error"] for p in points.values() if p["first_error"]})
    lines = [
        f"Run {context['date']} on {context['machine']}; PostgreSQL {context['pg_version']} "
        f"({context['pg_source']}).",
        "",
        f"`geopera.v1.KernelService/Execute` with operation `items.get` (one seeded item with "
        f"{context['assets']} asset(s), a `catalog:read` bearer token) on a real `geopera serve` process "
        f"(fresh database, default settings: INFO access log, pool of 16), against a bare grpc.aio echo "
        f"handler in its own process with the same server options. One grpc.aio load-generator process, "
        f"N closed-loop callers over min(N, 4) connections, {options.warmup:g} s warm-up then "
        f"{options.duration:g} s measured per point. The echo peer gets the Execute request's exact bytes "
        f"({context['request_bytes']} B) and the same metadata; it returns them, while Execute returns "
        f"{context['response_bytes']} B. Every Execute response is checked (status OK, operation "
        f"`items.get`, an `ItemsGetResult`); errors count warm-up calls too.",
        "",
        f"**Target: Execute throughput >= {TARGET_RATIO:.0%} of echo at {TARGET_CALLERS} callers: "
        f"{verdict} ({ratio:.1%}).**",
        "",
        table,
        "",
        "Ratio of Execute to echo throughput: "
        + ", ".join(f"{c} callers {r:.1%}" for c, r in ratios.items()) + ".",
        "",
        "CPU used during each measured window (cores, out of the machine's "
        f"{context['cpus']}; µs/call = CPU time per completed call):",
        "",
        cpu_table,
    ]
    if context.get("profiled"):
        lines += ["", f"Profiled run: the {TARGET_CALLERS}-caller Execute point ran under py-spy "
                  "(bench/out/), which slows it down; do not compare it with unprofiled runs."]
    if first_errors:
        lines += ["", "First errors seen:", "", *(f"- `{e}`" for e in first_errors)]
    outcome = Outcome(NAME, valid=valid, target_met=met,
                      summary=f"{TITLE}: {verdict}, Execute/echo at {TARGET_CALLERS} callers = {ratio:.1%}")
    return "\n".join(lines), outcome


def run(results: Results, options: Options) -> Outcome:
    echo: EchoProcess | None = None
    started, machine = utc_now(), machine_line()
    with bench_server("geopera-bench-", NAME) as bench:
        try:
            server, url, home, tmp = bench.server, bench.url, bench.home, bench.tmp
            pg_version, pg_backends = bench.pg_version, bench.pg_backends
            item_id, token = asyncio.run(seed(url, home))
            echo = EchoProcess(tmp / "echo").start()

            request = kernel_pb2.ExecuteRequest(operation="items.get")
            request.params.CopyFrom(_pack(catalog_pb2.ItemsGetParams(item_id=item_id)))
            metadata = [("authorization", "Bearer " + token)]
            response_bytes, assets = sanity_check(server, echo, request, metadata, item_id)
            payload_hex = request.SerializeToString().hex()

            assert server.process is not None and echo.process is not None
            server_pid, echo_pid = server.process.pid, echo.process.pid
            common = {"metadata": metadata, "payload_hex": payload_hex, "warmup": options.warmup,
                      "duration": options.duration}
            points: dict[tuple[str, int], dict[str, Any]] = {}
            for callers in CONCURRENCY:
                points[("echo", callers)] = run_load(
                    {**common, "target": echo.address, "method": ECHO_METHOD, "check": "echo",
                     "concurrency": callers},
                    {"echo": lambda: [echo_pid]},
                )
                profiler = None
                if options.profile and callers == TARGET_CALLERS:
                    profiler = Profiler(server_pid, f"{NAME}_execute_{callers}", options.duration)
                points[("execute", callers)] = run_load(
                    {**common, "target": server.address, "method": EXECUTE_METHOD, "check": "execute",
                     "expect_operation": "items.get", "expect_result_type": "geopera.v1.ItemsGetResult",
                     "concurrency": callers},
                    {"server": lambda: [server_pid], "postgres": pg_backends},
                    on_measure_start=profiler.start if profiler else None,
                )
                if profiler is not None:
                    profiler.finish()
                e, x = points[("echo", callers)], points[("execute", callers)]
                print(f"[{NAME}] {callers:>3} callers: echo {e['rps']:.0f} req/s ({e['errors']} errors), "
                      f"Execute {x['rps']:.0f} req/s ({x['errors']} errors)", flush=True)
            if server.process.poll() is not None:
                raise RuntimeError(f"the server exited during the bench:\n{server.log()[-4000:]}")

            context = {
                "date": started, "machine": machine, "pg_version": pg_version,
                "pg_source": "GEOPERA_TEST_DATABASE_URL" if os.environ.get("GEOPERA_TEST_DATABASE_URL")
                else "embedded, GEOPERA_TEST_DATABASE_URL unset",
                "cpus": len(os.sched_getaffinity(0)),
                "profiled": options.profile,
                "request_bytes": len(payload_hex) // 2, "response_bytes": response_bytes, "assets": assets,
            }
            body, outcome = report(points, options, context)
            results.set_section(TITLE, body)
            print(f"\n## {TITLE}\n\n{body}\n", flush=True)
            return outcome
        finally:
            if echo is not None:
                echo.stop()


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
