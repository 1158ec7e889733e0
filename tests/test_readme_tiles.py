"""README's tile command, run as printed against `geopera serve --demo` (only the address
differs): a signed XYZ template from tilejson, and a tile fetched through it with no header,
as QGIS would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request

import morecantile
import pytest

from tests.support.server import REPO, ServerProcess

BLOCK = re.compile(
    r"```bash\n(curl -s -H \"Authorization: Bearer \$TOKEN\" \\\n"
    r"  \"http://127.0.0.1:8080/v1/items/\$ITEM_ID/tilejson.json.*?)```",
    re.DOTALL,
)


@pytest.fixture(scope="module")
def demo_server(database_factory, tmp_path_factory):
    home = tmp_path_factory.mktemp("demo-tiles")
    server = ServerProcess(database_url=database_factory.create(), home=home, extra_args=["--demo"]).start()
    yield server
    server.stop()


def test_readme_signed_xyz_template_serves_tiles_without_a_header(demo_server):
    blocks = BLOCK.findall((REPO / "README.md").read_text())
    assert len(blocks) == 1, "README.md lost its tilejson example"
    token = (demo_server.home / "demo-token").read_text().strip()
    request = urllib.request.Request(
        f"{demo_server.http_url}/v1/op/items.list",
        data=json.dumps({"project_id": "demo", "page_size": 1}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        item_id = json.loads(response.read())["items"][0]["id"]
    env = {**os.environ, "TOKEN": token, "ITEM_ID": item_id}
    script = blocks[0].replace("127.0.0.1:8080", f"127.0.0.1:{demo_server.http_port}")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True,
                            timeout=120, cwd=REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr
    template = result.stdout.strip()
    assert "{z}/{x}/{y}.png?" in template and "signature=" in template and "expression=NDVI" in template
    request = urllib.request.Request(
        f"{demo_server.http_url}/v1/items/{item_id}/tilejson.json", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        doc = json.loads(response.read())
    tile = morecantile.tms.get("WebMercatorQuad").tile(doc["center"][0], doc["center"][1], doc["maxzoom"])
    with urllib.request.urlopen(template.format(z=tile.z, x=tile.x, y=tile.y), timeout=60) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "image/png"
        assert response.read()[:8] == b"\x89PNG\r\n\x1a\n"
