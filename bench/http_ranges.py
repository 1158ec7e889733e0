"""HTTP downloads of a large asset (`GET /v1/items/{id}/assets/{key}` through a
signed URL) next to plain reads of the same stored file, in the same run.

The asset is the Sentinel-2-sized COG of `bench.clip` (10980 x 10980 x 4 uint16,
about 900 MB), registered as an item of a real `geopera serve` on a fresh
database. Three reads, each timed `runs` times, the file and HTTP interleaved:

- whole: the entire file, in 1 MiB reads (the file) or one GET (HTTP);
- ranges 1 MiB: 256 reads of 1 MiB at seeded random offsets, one after the
  other on one keep-alive connection (a GDAL `/vsicurl/` pattern reading tiles);
- ranges 16 KiB: 2,000 reads of 16 KiB the same way (per-request cost dominates).

The whole file is fetched with curl (a C client, as GDAL's libcurl), the ranges with
`http.client` on one keep-alive connection. A peer serves the same stored file with
aiohttp's own `web.FileResponse` (sendfile, no auth, no database): what this HTTP
stack does at best, next to the kernel's authorised, signed route.

The file is read once before measuring, so the servers read from the page cache;
plain reads of the same file are timed through the page cache (memory speed) and,
for the whole file, with O_DIRECT (the disk's speed, the issue's "near disk speed").
Every HTTP answer is checked: the whole body's SHA-256 against the stored one
(once, before timing), every 16th range's bytes against the file's in every run.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import mmap
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from bench.clip import ensure_tile
from bench.harness import Options, Outcome, Spread, interleave
from bench.results import Results, machine_line, markdown_table, utc_now
from bench.server import bench_server, seed_project

NAME = "http_ranges"
TITLE = "HTTP range reads of a large asset vs plain file reads"
MIB = 1 << 20
READS = {"ranges 1 MiB": (256, MIB), "ranges 16 KiB": (2000, 16 << 10)}
TARGET_RATIO = 0.5  # whole-file HTTP at least half the disk's MB/s


async def register(url: str, home: Path, tile: Path) -> tuple[str, str]:
    """(item id, stored path) of `tile` registered in project `bench`."""
    from geopera_kernel.server.app import build_services
    from geopera_kernel.server.config import Settings
    from geopera_kernel.server.demo import SYSTEM
    from geopera_kernel.server.domain.models import AssetInput, ItemCreate

    services = await build_services(Settings(database_url=url, home=home, db_pool_size=2), url)
    try:
        asset = AssetInput("data", "", str(tile), ["data"], "")
        spec = ItemCreate("bench", "bench", "s2_like_20240601", None, {}, [asset], convert_to_cog=False)
        item = await services.catalog.create_item(SYSTEM, spec)
        ref = await services.catalog.asset_file(SYSTEM, f"items/{item.id}/assets/data")
        return item.id, services.storage.local_path(ref.storage_key)
    finally:
        await services.db.close()


def signed_url(base: str, token: str, resource_name: str) -> str:
    conn = http.client.HTTPConnection(urlsplit(base).netloc, timeout=60)
    body = json.dumps({"resource_name": resource_name, "ttl_seconds": 7200})
    conn.request("POST", "/v1/op/assets.sign", body, {"Authorization": f"Bearer {token}"})
    answer = conn.getresponse()
    text = answer.read()
    conn.close()
    if answer.status != 200:
        raise RuntimeError(f"assets.sign failed: {answer.status} {text[:300]!r}")
    return str(json.loads(text)["url"])


class HttpReader:
    """Reads through one keep-alive connection into a reused buffer."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.target = f"{parts.path}?{parts.query}"
        self.conn = http.client.HTTPConnection(parts.netloc, timeout=120)
        self.buffer = memoryview(bytearray(4 * MIB))

    def read(self, byte_range: tuple[int, int] | None, keep: bool = False) -> tuple[int, bytes]:
        headers = {} if byte_range is None else {"Range": f"bytes={byte_range[0]}-{byte_range[0] + byte_range[1] - 1}"}
        self.conn.request("GET", self.target, headers=headers)
        response = self.conn.getresponse()
        if response.status not in (200, 206):
            raise RuntimeError(f"GET answered {response.status}: {response.read()[:300]!r}")
        total, kept = 0, bytearray()
        while n := response.readinto(self.buffer):
            total += n
            if keep:
                kept += self.buffer[:n]
        return total, bytes(kept)

    def close(self) -> None:
        self.conn.close()


def offsets(count: int, size: int, length: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randrange(0, size - length), length) for _ in range(count)]


def time_file(path: str, ranges: list[tuple[int, int]] | None) -> float:
    """Seconds to read the whole file (None) or each range, with pread."""
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        if ranges is None:
            buffer = bytearray(MIB)
            with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
                while f.readinto(buffer):
                    pass
        else:
            for start, length in ranges:
                os.pread(fd, length, start)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def time_http(url: str, path: str, ranges: list[tuple[int, int]] | None, size: int) -> float:
    reader = HttpReader(url)
    try:
        started = time.perf_counter()
        if ranges is None:
            got, _ = reader.read(None)
            if got != size:
                raise RuntimeError(f"the whole GET gave {got} bytes of {size}")
        else:
            for byte_range in ranges:
                reader.read(byte_range)
        elapsed = time.perf_counter() - started
        if ranges is not None:  # checked after timing: every 16th range's bytes equal the file's
            with open(path, "rb") as f:
                for start, length in ranges[::16]:
                    f.seek(start)
                    if reader.read((start, length), keep=True)[1] != f.read(length):
                        raise RuntimeError(f"bytes {start}+{length} over HTTP differ from the file")
        return elapsed
    finally:
        reader.close()


def time_disk(path: str) -> float:
    """Seconds to read the whole file with O_DIRECT: from the disk, past the page cache."""
    buffer = mmap.mmap(-1, 4 * MIB)  # page-aligned, as O_DIRECT needs
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
    with os.fdopen(fd, "rb", buffering=0) as f:
        while f.readinto(buffer):
            pass
    return time.perf_counter() - started


def time_get(url: str, path: str, ranges: list[tuple[int, int]] | None, size: int) -> float:
    """The whole file with curl, ranges with http.client."""
    return time_curl(url, size) if ranges is None else time_http(url, path, ranges, size)


def time_curl(url: str, size: int) -> float:
    started = time.perf_counter()
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", url],
                         capture_output=True, text=True, timeout=300, check=True).stdout  # fmt: skip
    elapsed = time.perf_counter() - started
    if int(out) != size:
        raise RuntimeError(f"curl got {out} bytes of {size}")
    return elapsed


class FileResponsePeer:
    """`python -m bench.http_ranges peer PATH PORT`: aiohttp serving one file."""

    def __init__(self, path: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/file"
        self.process = subprocess.Popen([sys.executable, "-m", "bench.http_ranges", "peer", path, str(self.port)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the FileResponse peer did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def serve_peer(path: str, port: int) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/file", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def verify_whole(url: str, path: str) -> None:
    reader = HttpReader(url)
    digest = hashlib.sha256()
    try:
        reader.conn.request("GET", reader.target)
        response = reader.conn.getresponse()
        while n := response.readinto(reader.buffer):
            digest.update(reader.buffer[:n])
        etag = response.getheader("ETag")
    finally:
        reader.close()
    if f'"{digest.hexdigest()}"' != etag:
        raise RuntimeError("the whole body over HTTP does not hash to its ETag")
    with open(path, "rb") as f:
        if hashlib.file_digest(f, "sha256").hexdigest() != digest.hexdigest():
            raise RuntimeError("the body over HTTP differs from the stored file")


def run(results: Results, options: Options) -> Outcome:
    tile = ensure_tile()
    with bench_server("geopera-bench-http-", NAME) as bench:
        tokens = asyncio.run(seed_project(bench.url, bench.home, ["catalog:read"]))
        item_id, path = asyncio.run(register(bench.url, bench.home, tile))
        url = signed_url(bench.server.http_url, tokens["user"], f"items/{item_id}/assets/data")
        size = os.path.getsize(path)
        print(f"[{NAME}] {size / 1e6:.0f} MB asset; warming the page cache and checking the whole body", flush=True)
        time_file(path, None)
        verify_whole(url, path)
        peer = FileResponsePeer(path)
        try:
            rows, whole_ratio = measure(options, path, size, url, peer.url)
        finally:
            peer.stop()
    header = ["read", "MB read", "file (page cache) MB/s", "disk (O_DIRECT) MB/s", "kernel HTTP MB/s",
              "FileResponse MB/s", "ms per kernel request"]  # fmt: skip
    met = whole_ratio >= TARGET_RATIO
    body = "\n\n".join([
        f"{utc_now()}; {machine_line()}",
        f"Asset: the `bench.clip` COG, {size / 1e6:.0f} MB, registered on a real server; the kernel's HTTP route "
        "through a signed URL (`assets.sign`): the whole file with curl, ranges with `http.client` on one "
        "keep-alive connection. FileResponse: aiohttp's static file response (sendfile, no auth) serving the same "
        "stored file. The server reads from the page cache (warmed first); the file columns read the same file "
        "through the page cache (memory speed) and with O_DIRECT (the disk's own speed). "
        f"Median [min–max] of {options.runs} runs, interleaved.",
        markdown_table(header, rows),
        f"Target: a whole-file GET at least {TARGET_RATIO:.0%} of the disk's MB/s (O_DIRECT): "
        f"{'met' if met else 'missed'} ({whole_ratio:.2f}).",
    ])  # fmt: skip
    results.set_section(TITLE, body)
    return Outcome(NAME, valid=True, target_met=met, summary=f"{NAME}: whole-file HTTP/disk {whole_ratio:.2f}")


def measure(options: Options, path: str, size: int, url: str, peer_url: str) -> tuple[list[list[str]], float]:
    plans: dict[str, tuple[list[tuple[int, int]] | None, int]] = {"whole": (None, size)}
    for label, (count, length) in READS.items():
        plans[label] = (offsets(count, size, length, seed=len(label)), count * length)
    rows, whole_ratio = [], 0.0
    for label, (ranges, nbytes) in plans.items():
        peers: dict[str, Callable[[], float]] = {
            "file": lambda r=ranges: time_file(path, r),
            **({"disk": lambda: time_disk(path)} if ranges is None else {}),
            "kernel": lambda r=ranges: time_get(url, path, r, size),
            "peer": lambda r=ranges: time_get(peer_url, path, r, size),
        }
        timings = interleave(list(peers), options.runs, lambda name, _, p=peers: p[name]())
        speed = {name: Spread.of(nbytes / 1e6 / t for t in times) for name, times in timings.items()}
        if ranges is None:
            whole_ratio = speed["kernel"].median / speed["disk"].median
        count = 1 if ranges is None else len(ranges)
        per_request = Spread.of(t / count * 1e3 for t in timings["kernel"])
        disk = speed["disk"].fmt(".0f") if "disk" in speed else "–"
        rows.append([label, f"{nbytes / 1e6:.0f}", speed["file"].fmt(".0f"), disk, speed["kernel"].fmt(".0f"),
                     speed["peer"].fmt(".0f"), per_request.fmt(".3f")])  # fmt: skip
        print(f"[{NAME}] {label}: " + ", ".join(f"{k} {v.fmt('.0f')} MB/s" for k, v in speed.items()), flush=True)
    return rows, whole_ratio


def main() -> None:
    if sys.argv[1:2] == ["peer"]:
        serve_peer(sys.argv[2], int(sys.argv[3]))
        return
    from bench.harness import RUNS

    run(Results(), Options(runs=RUNS))


if __name__ == "__main__":
    main()
