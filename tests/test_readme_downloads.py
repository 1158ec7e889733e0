"""README's HTTP download commands, run as printed against `geopera serve
--demo` (only the address differs): sign an asset, read a range with curl,
`rio info` it through GDAL `/vsicurl/`."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.support.server import REPO, ServerProcess

BLOCK = re.compile(r"```bash\n(URL=\$\(curl -s -X POST http://127.0.0.1:8080/v1/op/assets.sign.*?)```", re.DOTALL)


@pytest.fixture(scope="module")
def demo_server(database_factory, tmp_path_factory):
    home = tmp_path_factory.mktemp("demo-downloads")
    server = ServerProcess(database_url=database_factory.create(), home=home, extra_args=["--demo"]).start()
    yield server
    server.stop()


def test_readme_sign_curl_and_rio_info(demo_server):
    blocks = BLOCK.findall((REPO / "README.md").read_text())
    assert len(blocks) == 1, "README.md lost its assets.sign example"
    token = (demo_server.home / "demo-token").read_text().strip()
    listed = subprocess.run(
        ["curl", "-s", "-X", "POST", f"{demo_server.http_url}/v1/op/items.list", "-H", f"Authorization: Bearer {token}",
         "-H", "Content-Type: application/json", "-d", '{"project_id": "demo", "page_size": 1}'],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    item_id = json.loads(listed.stdout)["items"][0]["id"]
    env = {**os.environ, "TOKEN": token, "ITEM_ID": item_id, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    script = blocks[0].replace("127.0.0.1:8080", f"127.0.0.1:{demo_server.http_port}")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True,
                            timeout=120, cwd=REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].strip() == "1024"
    info = json.loads(lines[1])
    assert info["driver"] == "GTiff" and info["count"] >= 1 and info["crs"]
