"""README.md's "Opening results" as a reader runs it against `geopera serve
--demo` (what `make serve` runs): its bash blocks in order in one shell
(`geopera download`, curl with a Range, `--signed-url`, curl and `rio info
/vsicurl/` on the signed URL) and its Python block, only the addresses
changed; what they print and write is what the section says."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from geopera_sdk import Client

from tests.support.server import REPO, ServerProcess

SECTION = re.compile(r"^## Opening results\n(.*?)(?=^## )", re.MULTILINE | re.DOTALL)
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _section() -> str:
    found = SECTION.findall((REPO / "README.md").read_text())
    assert len(found) == 1, "README.md lost its Opening results section"
    return found[0]


@pytest.fixture(scope="module")
def demo(database_factory, tmp_path_factory):
    home = tmp_path_factory.mktemp("opening")
    server = ServerProcess(database_url=database_factory.create(), home=home, extra_args=["--demo"]).start()
    yield server, (home / "demo-token").read_text().strip()
    server.stop()


def _run(script: str, interpreter: list[str], server: ServerProcess, token: str, cwd: Path):
    script = script.replace("127.0.0.1:50051", server.address).replace(
        "127.0.0.1:8080", f"127.0.0.1:{server.http_port}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
    # The reader's shell: TOKEN and PATH as the grpcurl section exports them; GEOPERA_SERVER
    # stands in for the default address `make serve` listens on.
    env.update(TOKEN=token, PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}", GEOPERA_SERVER=server.address)
    return subprocess.run([*interpreter, script], env=env, cwd=cwd, capture_output=True, text=True, timeout=180)


def test_the_bash_blocks_run_as_printed(demo, tmp_path):
    server, token = demo
    section = _section()
    blocks = BASH_BLOCK.findall(section)
    assert len(blocks) == 3 and "geopera download" in blocks[0] and "Range: bytes=0-1023" in blocks[1]
    assert "--signed-url" in blocks[2] and "rio info" in blocks[2]
    result = _run("set -euo pipefail\n" + "\n".join(blocks), ["bash", "-c"], server, token, tmp_path)
    assert result.returncode == 0, result.stderr
    with Client(server.address, token) as client:
        item = next(iter(client.items.list("demo", collection_id="s2_slovenia")))
        asset = client.items.get(item.id).assets["data"]
    scene = (tmp_path / "scene.tif").read_bytes()
    assert hashlib.sha256(scene).hexdigest() == asset.sha256
    summary = json.loads(result.stdout[: result.stdout.index("}") + 1])
    assert summary["path"] == "scene.tif" and summary["sha256"] == asset.sha256
    # The range read: what the prose says it answers, and the file's first KiB.
    promised = re.search(r"`(Content-Range: bytes 0-1023/\d+)`", section)
    assert promised and "206 Partial Content" in section
    headers = result.stdout.lower()
    assert " 206 " in headers and promised.group(1).lower() in headers and f'etag: "{asset.sha256}"' in headers
    assert (tmp_path / "header.bin").read_bytes() == scene[:1024]
    # The signed URL: curl without a token got the same bytes; GDAL opened the COG through it.
    assert (tmp_path / "signed.tif").read_bytes() == scene
    info = json.loads(next(line for line in result.stdout.splitlines() if line.startswith('{"')))
    assert info["driver"] == "GTiff" and info["count"] == 4


def test_the_python_block_runs_as_printed(demo, tmp_path):
    server, token = demo
    blocks = PYTHON_BLOCK.findall(_section())
    assert len(blocks) == 1
    result = _run(blocks[0], [str(REPO / ".venv" / "bin" / "python"), "-c"], server, token, tmp_path)
    assert result.returncode == 0, result.stderr
    verified, signed = result.stdout.splitlines()
    assert verified == "True" and (tmp_path / "copy.tif").exists()
    url, expires = signed.split()
    assert url.startswith(f"http://127.0.0.1:{server.http_port}/v1/items/") and "signature=" in url
    assert expires.endswith("+00:00")
