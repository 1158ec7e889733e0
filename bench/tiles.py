"""z=14 map tiles of a Sentinel-2-sized COG (`bench.clip.ensure_tile`: 10980 x 10980, 4 x
uint16, ZSTD, 512 tiles, overviews, statistics) at 64 concurrent callers: through the
server's HTTP projection (bearer auth, the item's stored render hint: true colour, stretched
from the embedded statistics) vs TiTiler (`titiler.core` `TilerFactory` on uvicorn, one
process like the server) asked for the same tiles with the same bands and stretch, same
machine, same run, interleaved runs (median [min–max]). Before measuring, the bench checks
that both answer the same pixels (within 1 DN) for a sample of the tiles.

Tiles are drawn uniformly (seeded) from the z=14 tiles wholly inside the image; every caller
keeps one keep-alive connection (`bench.http_load`). Needs the `bench` extra (titiler.core,
uvicorn): `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import morecantile
import numpy as np
import rasterio
from PIL import Image
from rasterio.warp import transform_bounds

from bench.clip import ensure_tile
from bench.harness import REPO, Options, Outcome, Spread, interleave, run_load, spread
from bench.results import Results, machine_line, markdown_table, utc_now
from bench.server import bench_server, seed_project

NAME = "tiles"
TITLE = "z=14 map tiles over HTTP vs TiTiler"
ZOOM = 14
CALLERS = 64
TILE_SAMPLE = 400
CHECKED_TILES = 8
TARGET_RATIO = 1.0  # our tiles/s over TiTiler's
PEERS = ("geopera", "titiler")


def run(results: Results, options: Options) -> Outcome:
    started, machine = utc_now(), machine_line()
    path = ensure_tile()
    tiles = _tiles(path)
    with bench_server("geopera-bench-tiles-", NAME) as bench:
        tokens = asyncio.run(seed_project(bench.url, bench.home, ["catalog:read"]))
        # TiTiler reads the very file the server stored (same bytes, same page cache).
        item_id, stored, rescale = asyncio.run(_register(bench.url, bench.home, path))
        titiler = _Titiler(bench.tmp)
        try:
            urls = {
                "geopera": [
                    f"{bench.server.http_url}/v1/items/{item_id}/tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}.png"
                    for t in tiles
                ],
                "titiler": [titiler.tile_url(stored, t, rescale) for t in tiles],
            }
            headers = {"geopera": {"Authorization": f"Bearer {tokens['user']}"}, "titiler": {}}
            _check_same_pixels(urls, headers)
            pids = {"geopera": lambda: [_pid(bench.server.process)], "titiler": lambda: [_pid(titiler.process)]}

            def measure(peer: str, _index: int) -> dict[str, Any]:
                print(f"[{NAME}] {peer}: {CALLERS} callers, {options.duration:.0f} s", flush=True)
                spec = {
                    "loadgen": "bench.http_load",
                    "urls": urls[peer],
                    "headers": headers[peer],
                    "concurrency": CALLERS,
                    "warmup": options.warmup,
                    "duration": options.duration,
                }
                return run_load(spec, cpu_groups={"server": pids[peer]})

            measured = interleave(PEERS, options.runs, measure)
        finally:
            titiler.stop()
    rps = {peer: spread(measured[peer], "rps") for peer in PEERS}
    errors = sum(r["errors"] for peer in PEERS for r in measured[peer])
    ratio = Spread.of(
        ours["rps"] / theirs["rps"] for ours, theirs in zip(measured["geopera"], measured["titiler"], strict=True)
    )
    met = ratio.median >= TARGET_RATIO
    rows = [
        [
            peer,
            rps[peer].fmt(".0f"),
            spread(measured[peer], "p50_ms").fmt(".1f"),
            spread(measured[peer], "p99_ms").fmt(".1f"),
            Spread.of(r["cpu"].get("server", 0.0) for r in measured[peer]).fmt(".2f"),
            Spread.of(r["rps"] / max(r["cpu"].get("server", 0.0), 1e-9) for r in measured[peer]).fmt(".0f"),
            str(sum(r["errors"] for r in measured[peer])),
        ]
        for peer in PEERS
    ]
    body = "\n".join(
        [
            f"{started}; {machine}.",
            "",
            f"{len(tiles)} distinct z={ZOOM} tiles (256 px PNG, true colour B4/B3/B2 stretched from the embedded "
            f"statistics) of a 10980 x 10980 4 x uint16 COG, {CALLERS} concurrent callers, {options.runs} "
            f"interleaved runs of {options.duration:.0f} s (+{options.warmup:.0f} s warm-up) each; "
            "median [min–max]. Same pixels checked (within 1 DN) before measuring. `server cores`: CPU of the "
            "serving process during the window; `tiles per core-s`: tiles/s over it, the figure that holds up "
            "when other work shares the machine (see the load average).",
            "",
            markdown_table(
                ["server", "tiles/s", "p50 ms", "p99 ms", "server cores", "tiles per core-s", "errors"], rows
            ),
            "",
            f"Throughput ratio geopera / TiTiler: **{ratio.fmt('.2f')}** (target >= {TARGET_RATIO:.1f}: "
            f"{'met' if met else 'MISSED'}).",
        ]
    )
    results.set_section(TITLE, body)
    return Outcome(
        NAME,
        valid=errors == 0,
        target_met=met,
        summary=f"{rps['geopera'].fmt('.0f')} vs TiTiler {rps['titiler'].fmt('.0f')} tiles/s, ratio {ratio.fmt()}",
    )


def _tiles(path: Path) -> list[morecantile.Tile]:
    """A seeded sample of the z=14 tiles wholly inside the image."""
    tms = morecantile.tms.get("WebMercatorQuad")
    with rasterio.open(path) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    inside = [
        t
        for t in tms.tiles(west, south, east, north, [ZOOM])
        if (b := tms.bounds(t)).left > west and b.right < east and b.bottom > south and b.top < north
    ]
    return random.Random(14).sample(inside, min(TILE_SAMPLE, len(inside)))


async def _register(url: str, home: Path, path: Path) -> tuple[str, Path, list[tuple[float, float]]]:
    """The COG as an item of project `bench`: its id, stored file and stored RGB stretch."""
    from geopera_kernel.server.app import build_services
    from geopera_kernel.server.config import Settings
    from geopera_kernel.server.demo import SYSTEM
    from geopera_kernel.server.domain.models import AssetInput, ItemCreate

    print(f"[{NAME}] registering the tile as an item", flush=True)
    services = await build_services(Settings(database_url=url, home=home, db_pool_size=2), url)
    try:
        item = await services.catalog.create_item(
            SYSTEM,
            ItemCreate(
                project_id="bench",
                collection_id="bench",
                name="s2_like_20200701",
                datetime=None,
                properties={},
                assets=[AssetInput("data", "", str(path), ["data"], path.name)],
                convert_to_cog=False,
            ),
        )
        stored = Path(services.storage.local_path(item.assets[0].storage_key))
    finally:
        await services.db.close()
    render = item.assets[0].render
    ranges = [(r["min"], r["max"]) for r in render["rescale"]]
    return item.id, stored, [ranges[i - 1] for i in render["rgb_bands"]]


class _Titiler:
    def __init__(self, tmp: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = tmp / "titiler.log"
        command = [sys.executable, "-m", "uvicorn", "bench.titiler_app:app", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--log-level", "warning", "--no-access-log"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log, env=dict(os.environ))
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/openapi.json", timeout=5).read()
                return
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"TiTiler did not start; see {self.log}") from None
                time.sleep(0.2)

    def tile_url(self, path: Path, tile: morecantile.Tile, rescale: list[tuple[float, float]]) -> str:
        query = f"url={quote(str(path))}&bidx=3&bidx=2&bidx=1" + "".join(f"&rescale={lo},{hi}" for lo, hi in rescale)
        return f"http://127.0.0.1:{self.port}/cog/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png?{query}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _pid(process: subprocess.Popen[bytes] | None) -> int:
    assert process is not None
    return process.pid


def _check_same_pixels(urls: dict[str, list[str]], headers: dict[str, dict[str, str]]) -> None:
    for index in range(CHECKED_TILES):
        images = []
        for peer in PEERS:
            request = urllib.request.Request(urls[peer][index], headers=headers[peer])
            with urllib.request.urlopen(request, timeout=60) as response:
                images.append(np.asarray(Image.open(io.BytesIO(response.read())).convert("RGBA")).astype(int))
        worst = int(np.abs(images[0] - images[1]).max())
        if worst > 1:
            raise RuntimeError(f"tile {urls['geopera'][index]} differs from TiTiler's by {worst} DN")
