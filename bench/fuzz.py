"""`make fuzz`: every operation of the registry fuzzed over gRPC `Execute` with
at least 10,000 hostile requests each (`--requests`), the streaming RPCs and
the HTTP projection with fewer, against one real server; the counts by status
code per operation go to the "Fuzz" section of `bench/RESULTS.md`.

The requests come from the strategies of the bounded sample in `make test`
(tests/fuzz/strategies.py): fully generated params, a valid request with one
part made hostile, undecodable envelopes; plus, once each, the catalogue of
known-hostile values. Hypothesis draws them in a separate process (the next
operation's while this one's are sent), then many concurrent calls send them
over one channel. The invariant is the tests': OK or a client error with
ErrorInfo, never INTERNAL/UNKNOWN/5xx or a lost trailer, and the server still
serves after each operation.

Exit status 0 when nothing broke the invariant, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from bench.results import Results, machine_line, markdown_table, utc_now
from geopera.v1 import kernel_pb2, kernel_pb2_grpc
from tests.fuzz import strategies
from tests.fuzz.corpus import Corpus, collect_corpus
from tests.fuzz.invariants import Outcome, grpc_violation, http_outcome, http_violation, rpc_error_outcome
from tests.fuzz.support import describe, forbidden_texts
from tests.support.registry import REGISTRY

SECTION = "Fuzz (make fuzz)"
TOKENS = ("alpha", "admin")
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
STREAMS = {
    "WatchJob": kernel_pb2.WatchJobRequest,
    "DownloadAsset": kernel_pb2.DownloadAssetRequest,
    "UploadAsset": kernel_pb2.UploadAssetRequest,
}
KEPT_EXAMPLES = 3  # per operation and problem


def draw(strategy: st.SearchStrategy[Any], count: int, seed: int) -> list[Any]:
    """Up to `count` values of `strategy` (fewer when its space is smaller)."""
    out: list[Any] = []

    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @hypothesis_seed(seed)
    @given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out


def generate_execute(name: str, corpus: Corpus, count: int, seed: int) -> list[tuple[bytes, str, str | None]]:
    """(serialized ExecuteRequest, token name, idempotency key): the catalogue first, then drawn ones."""
    operation = REGISTRY.get(name)
    assert operation is not None
    spend = operation.idempotency_key
    keys = st.one_of(st.none(), st.text(alphabet=PRINTABLE, max_size=300)) if spend else st.none()
    drawn = draw(st.tuples(strategies.execute_requests(operation, corpus), st.sampled_from(TOKENS), keys), count, seed)
    known = [
        strategies.pack(operation, message)
        for focus in strategies.focus_points(operation, corpus)
        for message in strategies.catalogue(focus, corpus)
    ]
    requests = [(r.SerializeToString(), "alpha", None) for r in known]
    requests += [(r.SerializeToString(), token, key) for r, token, key in drawn]
    return requests


def generate_stream(rpc: str, corpus: Corpus, count: int, seed: int) -> list[bytes]:
    first = strategies.stream_requests(STREAMS[rpc].DESCRIPTOR, corpus, rpc)
    return [m.SerializeToString() for m in draw(first, count, seed)]


def generate_http(name: str, corpus: Corpus, count: int, seed: int) -> list[bytes]:
    from tests.fuzz.test_fuzz_rest import wrong_typed_bodies

    operation = REGISTRY.get(name)
    assert operation is not None
    return draw(wrong_typed_bodies(operation, corpus), count, seed)


class Tally:
    """Counts by status per operation, and a few requests per problem."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = {}
        self.examples: dict[tuple[str, str], list[str]] = {}
        self.distinct: dict[str, int] = {}

    def add(self, name: str, code: str, problem: str | None, request: Callable[[], str]) -> None:
        self.counts.setdefault(name, Counter())[code] += 1
        if problem is not None:
            self.counts[name]["VIOLATIONS"] += 1
            kept = self.examples.setdefault((name, problem), [])
            if len(kept) < KEPT_EXAMPLES:
                kept.append(request()[:600])

    @property
    def violations(self) -> int:
        return sum(c["VIOLATIONS"] for c in self.counts.values())


async def _pool(jobs: list[Any], concurrency: int, run: Callable[[Any], Any]) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker() -> None:
        while not queue.empty():
            await run(queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def send_execute(address: str, tokens: dict[str, str], name: str, requests: list[Any], count: int,
                       concurrency: int, tally: Tally, forbidden: tuple[str, ...]) -> None:  # fmt: skip
    """Send `count` requests (the generated ones, repeated when there are fewer)."""
    jobs = [requests[i % len(requests)] for i in range(max(count, len(requests)))]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = kernel_pb2_grpc.KernelServiceStub(channel)

        async def run(job: tuple[bytes, str, str | None]) -> None:
            raw, token, key = job
            request = kernel_pb2.ExecuteRequest.FromString(raw)
            metadata = [("authorization", f"Bearer {tokens[token]}")]
            if key is not None:
                metadata.append(("idempotency-key", key))
            try:
                await stub.Execute(request, metadata=metadata, timeout=60)
                outcome = Outcome("OK")
            except grpc.aio.AioRpcError as err:
                outcome = rpc_error_outcome(err)
            tally.add(name, outcome.code, grpc_violation(outcome, forbidden), lambda: describe(request))

        await _pool(jobs, concurrency, run)


async def send_streams(address: str, token: str, rpc: str, requests: list[bytes], count: int, concurrency: int,
                       tally: Tally, forbidden: tuple[str, ...]) -> None:  # fmt: skip
    jobs = [requests[i % len(requests)] for i in range(max(count, len(requests)))]
    metadata = [("authorization", f"Bearer {token}")]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = kernel_pb2_grpc.KernelServiceStub(channel)

        async def run(raw: bytes) -> None:
            message = STREAMS[rpc].FromString(raw)
            try:
                if rpc == "UploadAsset":
                    await stub.UploadAsset(iter([message]), metadata=metadata, timeout=60)
                else:
                    # A watch of a live job waits for its next event: only the first answer counts.
                    call = getattr(stub, rpc)(message, metadata=metadata, timeout=3 if rpc == "WatchJob" else 60)
                    await call.read()
                    call.cancel()
                outcome = Outcome("OK")
            except asyncio.CancelledError:
                # grpc.aio raises this (not an AioRpcError) when the server resets the stream.
                outcome = Outcome("CANCELLED (stream reset)")
            except grpc.aio.AioRpcError as err:
                outcome = rpc_error_outcome(err)
                if rpc == "WatchJob" and outcome.code == "DEADLINE_EXCEEDED":
                    outcome = Outcome("OK (waiting)")
            problem = None if outcome.code == "OK (waiting)" else grpc_violation(outcome, forbidden)
            tally.add(rpc, outcome.code, problem, lambda: describe(message))

        await _pool(jobs, concurrency, run)


async def send_http(base_url: str, token: str, name: str, bodies: list[bytes], count: int, concurrency: int,
                    tally: Tally, forbidden: tuple[str, ...]) -> None:  # fmt: skip
    jobs = [bodies[i % len(bodies)] for i in range(max(count, len(bodies)))]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def run(body: bytes) -> None:
            async with session.post(f"{base_url}/v1/op/{name}", data=body, headers=headers) as response:
                outcome = http_outcome(response.status, await response.read())
            tally.add("HTTP " + name, outcome.code, http_violation(outcome, forbidden), lambda: describe(body))

        await _pool(jobs, concurrency, run)


def serving(channel: grpc.Channel) -> bool:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@contextmanager
def fuzz_world(tmp: Path) -> Iterator[Any]:
    """A server on a fresh database with the tests' seeded world."""
    from tests.conftest import TEST_SERVER_ENV, World, seed_world
    from tests.support.db import DatabaseFactory, admin_url
    from tests.support.server import ServerProcess

    factory = DatabaseFactory(admin_url(tmp))
    factory.prepare_template()
    server: ServerProcess | None = None
    try:
        url = factory.create()
        server = ServerProcess(database_url=url, home=tmp / "server", extra_env=TEST_SERVER_ENV).start()
        world = World(server=server, database_url=url, home=tmp / "server")
        asyncio.run(seed_world(world))
        world.channel = server.channel()
        yield world
        world.channel.close()
    finally:
        if server is not None:
            server.stop()
        factory.drop_all()


def _table(tally: Tally, labels: list[str], healthy: dict[str, bool]) -> str:
    codes = sorted({code for label in labels for code in tally.counts.get(label, {}) if code != "VIOLATIONS"})
    rows = []
    for label in labels:
        counts = tally.counts.get(label, Counter())
        total = sum(v for k, v in counts.items() if k != "VIOLATIONS")
        rows.append([label, str(total), str(tally.distinct.get(label, "")), *(str(counts.get(c, 0)) for c in codes),
                     str(counts.get("VIOLATIONS", 0)), "yes" if healthy.get(label, True) else "NO"])  # fmt: skip
    return markdown_table(["operation", "requests", "distinct", *codes, "violations", "serving after"], rows)


UNHANDLED = re.compile(r"unhandled error in (\S+) \(request (\S+)\)")
EXCEPTION_LINE = re.compile(r"^[a-z_][\w]*(\.[\w]+)+: |^[A-Z]\w*(Error|Exception): ")


def server_causes(log: Path) -> Counter[tuple[str, str]]:
    """(operation, the exception's last line) of each unhandled error in the
    server's log: what the INTERNALs and 5xx were, for triage."""
    operations: dict[str, str] = {}
    errors: list[tuple[str, str, str]] = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("logger") == "geopera.access" and entry.get("request_id"):
            operations[entry["request_id"]] = entry.get("operation") or entry.get("rpc", "")
        match = UNHANDLED.search(str(entry.get("msg", "")))
        if match:
            named = [x for x in str(entry.get("exc", "")).splitlines() if EXCEPTION_LINE.match(x)] or [""]
            errors.append((match.group(1), match.group(2), re.sub(r"\d+(\.\d+)?", "N", named[-1])[:160]))
    return Counter((operations.get(request_id) or where, cause) for where, request_id, cause in errors)


def report(tally: Tally, args: argparse.Namespace, seconds: float, healthy: dict[str, bool],
           causes: Counter[tuple[str, str]]) -> str:  # fmt: skip
    grpc_labels = [label for label in tally.counts if not label.startswith("HTTP ")]
    http_labels = [label for label in tally.counts if label.startswith("HTTP ")]
    verdict = (
        "PASS: no request broke the invariant"
        if not tally.violations
        else (f"FAIL: {tally.violations} requests broke the invariant")
    )
    lines = [
        f"Run {utc_now()}, {seconds:.0f} s, hypothesis seed {args.seed}; {machine_line()}.",
        f"Command: `make fuzz` (`.venv/bin/python -m bench.fuzz --requests {args.requests} "
        f"--stream-requests {args.stream_requests} --http-requests {args.http_requests}`).",
        "",
        f"**{verdict}.** Invariant: OK or a client error (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, "
        "PERMISSION_DENIED, FAILED_PRECONDITION, OUT_OF_RANGE, ABORTED, RESOURCE_EXHAUSTED) with one "
        "ErrorInfo of domain geopera.v1, the status the server sent (no trailer lost), no server path "
        "in the error; HTTP: no 5xx and a JSON error body; the server serves after each operation. "
        "`distinct` is how many different requests hypothesis drew (the catalogue included); when the "
        "space is smaller than the count, requests repeat.",
        "",
        "gRPC `Execute` per operation, then the streaming RPCs (status codes):",
        "",
        _table(tally, grpc_labels, healthy),
    ]
    if http_labels:
        lines += ["", "HTTP `POST /v1/op/{operation}` with hostile JSON bodies (HTTP statuses):", "",
                  _table(tally, http_labels, healthy)]  # fmt: skip
    if causes:
        rows = [[operation, f"`{cause}`", str(n)] for (operation, cause), n in sorted(causes.items())]
        lines += ["", "Unhandled errors in the server's log, by operation and exception (digits as N):", "",
                  markdown_table(["operation", "exception", "count"], rows)]  # fmt: skip
    if tally.examples:
        lines += ["", "Violations (at most 3 requests each):", ""]
        for (name, problem), kept in sorted(tally.examples.items()):
            lines.append(f"- `{name}`: {problem}")
            lines += [f"  - `{json.dumps(k, ensure_ascii=False)[1:-1][:400]}`" for k in kept]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--requests", type=int, default=10_000, help="gRPC Execute requests per operation")
    parser.add_argument("--stream-requests", type=int, default=2_000, help="requests per streaming RPC")
    parser.add_argument("--http-requests", type=int, default=1_000, help="HTTP requests per operation")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random, reported)")
    parser.add_argument("--only", action="append", metavar="OPERATION",
                        help="fuzz only this operation or streaming RPC (repeatable)")  # fmt: skip
    parser.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args(argv)
    args.seed = args.seed if args.seed is not None else random.randrange(2**32)
    names = args.only or [*REGISTRY.names(), *STREAMS]
    tally = Tally()
    healthy: dict[str, bool] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="geopera-fuzz-") as tmp, fuzz_world(Path(tmp)) as world:
        corpus = collect_corpus(world)
        forbidden = forbidden_texts(world.home)
        tokens = {t: world.tokens[t] for t in TOKENS}
        plan: list[tuple[str, str, Callable[..., Any], int]]
        plan = [("grpc", n, generate_execute, args.requests) for n in names if n not in STREAMS]
        plan += [("stream", rpc, generate_stream, args.stream_requests) for rpc in STREAMS if rpc in names]
        if args.http_requests:
            plan += [("http", n, generate_http, args.http_requests) for n in names if n not in STREAMS]
        with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
            pending = [pool.submit(gen, name, corpus, count, args.seed) for _, name, gen, count in plan]
            for (kind, name, _, count), future in zip(plan, pending, strict=True):
                waited = time.monotonic()
                generated = future.result()
                waited = time.monotonic() - waited
                label = name if kind == "grpc" else (name if kind == "stream" else "HTTP " + name)
                tally.distinct[label] = len({r if isinstance(r, bytes) else r[0] for r in generated})
                began = time.monotonic()
                if kind == "grpc":
                    coroutine = send_execute(world.server.address, tokens, name, generated, count, args.concurrency,
                                             tally, forbidden)  # fmt: skip
                elif kind == "stream":
                    coroutine = send_streams(world.server.address, tokens["alpha"], name, generated, count,
                                             args.concurrency, tally, forbidden)  # fmt: skip
                else:
                    coroutine = send_http(world.server.http_url, tokens["alpha"], name, generated, count,
                                          args.concurrency, tally, forbidden)  # fmt: skip
                asyncio.run(coroutine)
                healthy[label] = serving(world.channel)
                counts = tally.counts.get(label, Counter())
                sent = sum(v for k, v in counts.items() if k != "VIOLATIONS")
                print(f"{label}: {sent} requests in {time.monotonic() - began:.1f} s (waited {waited:.1f} s for "
                      f"them), {counts.get('VIOLATIONS', 0)} violations", flush=True)  # fmt: skip
                if not healthy[label]:
                    print(f"the server stopped serving after {label}", file=sys.stderr)
                    pool.shutdown(cancel_futures=True)
                    break
        causes = server_causes(world.server.log_path)
    body = report(tally, args, time.monotonic() - started, healthy, causes)
    if not args.no_results:
        Results().set_section(SECTION, body)
    print(body)
    return 0 if not tally.violations and all(healthy.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
