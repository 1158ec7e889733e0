"""The demo bootstrap of `geopera serve --demo` (what `make serve` runs): a
project with credits, a user token (every scope but admin and worker), and the Sentinel-2 samples
shipped in `data/s2_slovenia` as items."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import rasterio

from geopera_kernel.raster.job_types import BUILTIN_JOB_TYPES
from geopera_kernel.server.auth import SCOPES, Principal
from geopera_kernel.server.config import Settings
from geopera_kernel.server.domain.models import AssetInput, ItemCreate
from geopera_kernel.server.errors import DomainError

if TYPE_CHECKING:
    from geopera_kernel.server.services import Services

log = logging.getLogger(__name__)

DEMO_PROJECT = "demo"
DEMO_CREDITS = 10_000
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "s2_slovenia"
SYSTEM = Principal(id="system", kind="admin", scopes=frozenset({"admin"}), name="demo bootstrap")


def sample_items(sample_dir: Path = SAMPLE_DIR) -> list[ItemCreate]:
    """One item per sample raster, named after its file; stacks get the range
    of their band datetimes."""
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    items = []
    for entry in manifest["files"]:
        if not entry["file"].endswith(".tif"):
            continue
        name = entry["file"].removesuffix(".tif")
        when = entry.get("datetime")
        properties: dict[str, object] = {
            k: entry[k] for k in ("cloud_fraction", "dataset", "kind") if entry.get(k) is not None
        }
        if when is None:
            # A time stack: its bands are the time steps, each tagged with its datetime.
            with rasterio.open(sample_dir / entry["file"]) as src:
                steps = [src.tags(b).get("ACQUISITION_DATETIME") for b in src.indexes]
            steps = [s for s in steps if s]
            if steps:
                properties["start_datetime"], properties["end_datetime"] = steps[0], steps[-1]
                when = steps[0]
        items.append(
            ItemCreate(
                project_id=DEMO_PROJECT,
                collection_id="s2_slovenia",
                name=name,
                datetime=datetime.fromisoformat(when.replace("Z", "+00:00")) if when else None,
                properties=properties,
                assets=[AssetInput("data", "", str(sample_dir / entry["file"]), ["data"], entry["file"])],
                convert_to_cog=False,
            )
        )
    return items


async def bootstrap_demo(services: Services, token_file: Path) -> str:
    """Idempotent: reuses the project, items and token of an earlier run."""
    try:
        await services.catalog.create_project(DEMO_PROJECT, "Demo project")
        await services.credits.grant(DEMO_PROJECT, DEMO_CREDITS, "demo bootstrap")
    except DomainError as err:
        if err.reason != "PROJECT_EXISTS":
            raise
    for spec in sample_items():
        try:
            item = await services.catalog.create_item(SYSTEM, spec)
            log.info("registered demo item %s (%s)", item.name, item.id)
        except DomainError as err:
            if err.reason != "ITEM_NAME_TAKEN":
                raise
    return await reusable_token(
        services, token_file, kind="user", scopes=[s for s in SCOPES if s not in ("admin", "worker")],
        projects=[DEMO_PROJECT],
    )  # fmt: skip


async def demo_worker_token(services: Services, token_file: Path) -> str:
    """The local worker's credential: granted the built-in job types it runs,
    every project."""
    job_types = [job_type.id for job_type in BUILTIN_JOB_TYPES]
    return await reusable_token(
        services, token_file, kind="worker", scopes=["worker"], projects=[], job_types=job_types
    )


async def reusable_token(
    services: Services,
    token_file: Path,
    *,
    kind: str,
    scopes: list[str],
    projects: list[str],
    job_types: Sequence[str] = (),
) -> str:
    """The token saved in `token_file` when it still works (and holds the
    `job_types` grants), else a new one (saved with mode 0600)."""
    token = token_file.read_text().strip() if token_file.exists() else ""
    if token:
        try:
            principal = await services.tokens.authenticate(f"Bearer {token}")
            if set(job_types) <= principal.job_type_ids:
                return token
        except DomainError:
            pass
    _, token = await services.tokens.create_token(
        name=token_file.stem, kind=kind, scopes=scopes, project_ids=projects, job_type_ids=job_types
    )
    token_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


class LocalWorker:
    """The one local worker `make serve` runs (built-in job types). It dies
    with the server process and is started again should it exit on its own,
    so the demo never sits with jobs queued and nobody to run them.

    No preexec_fn: running Python between fork and exec in a process with gRPC
    threads crashed the child now and then (gRPC's fork handlers). The worker
    arms its own parent-death signal (`--parent-pid`)."""

    def __init__(self, address: str, token: str, home: Path, ca_file: Path | None = None) -> None:
        self._argv = [sys.executable, "-m", "geopera_kernel.worker", "--server", address, "--name", "demo-worker",
                      "--workdir", str(home / "worker"), "--parent-pid", str(os.getpid())]  # fmt: skip
        if ca_file is not None:
            self._argv += ["--tls-ca", str(ca_file)]
        self._env = {**os.environ, "GEOPERA_WORKER_TOKEN": token}
        self._process: subprocess.Popen[bytes] | None = None
        self._supervisor: asyncio.Task[None] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Always from the loop's own thread: the worker's parent-death signal
        # follows the thread that started it.
        return subprocess.Popen(self._argv, env=self._env)

    def start(self) -> None:
        self._process = self._spawn()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _supervise(self) -> None:
        backoff = 1.0
        while True:
            started = time.monotonic()
            assert self._process is not None
            # Polled: a thread blocked in wait() would hold up asyncio.run's exit.
            while (code := self._process.poll()) is None:  # noqa: ASYNC110
                await asyncio.sleep(1.0)
            if time.monotonic() - started > 60:
                backoff = 1.0
            log.warning("the local worker exited (code %s); starting it again in %.0f s", code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            self._process = self._spawn()

    def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=60)


def demo_ca_file(settings: Settings) -> Path | None:
    """What the demo worker and the printed grpcurl line trust when the server
    serves TLS: GEOPERA_TLS_CA, else the server's own certificate (right for
    a self-signed one)."""
    if settings.tls_cert is None:
        return None
    return Path(os.environ.get("GEOPERA_TLS_CA") or settings.tls_cert)


async def token_facts(services: Services, token: str) -> tuple[int, list[str]]:
    """What the banner states of the demo token, read now: its project's available
    credits (lower than the grant after jobs ran) and the scopes it holds."""
    principal = await services.tokens.authenticate(f"Bearer {token}")
    balance = await services.credits.balance(SYSTEM, DEMO_PROJECT)
    return balance.available, sorted(principal.scopes)


def quickstart_text(
    token: str,
    address: str,
    grpcurl: str,
    ca_file: Path | None = None,
    *,
    available: int,
    scopes: list[str],
    http_url: str = "",
) -> str:
    body = json.dumps(
        {
            "operation": "items.list",
            "params": {"@type": "type.googleapis.com/geopera.v1.ItemsListParams", "project_id": DEMO_PROJECT},
        }
    )
    command = " ".join(
        [
            shlex.quote(grpcurl),
            *(["-cacert", shlex.quote(str(ca_file))] if ca_file else ["-plaintext"]),
            "-H",
            shlex.quote(f"authorization: Bearer {token}"),
            "-d",
            shlex.quote(body),
            address,
            "geopera.v1.KernelService/Execute",
        ]
    )
    return (
        f"\nGeopera kernel is serving on {address} (project '{DEMO_PROJECT}', {available} credits available).\n"
        f"Demo token ({', '.join(scopes)} on '{DEMO_PROJECT}'): {token}\n"
        f"List the demo items:\n\n  {command}\n"
        + (
            f"\nHTTP/JSON on {http_url} (OpenAPI at {http_url}/v1/openapi.json).\n"
            f"Portal: open {http_url}/ in a browser and sign in with the demo token.\n"
            if http_url
            else ""
        )
    )
