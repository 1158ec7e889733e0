"""README's "Long analytics as jobs" commands, run as printed against
`geopera serve --demo` (only the addresses differ): analytics.submit over
HTTP, `geopera jobs watch|list|get` and `geopera download` of the result."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.support.server import REPO, ServerProcess

SECTION = re.compile(r"^### Long analytics as jobs, and jobs from the shell\n(.*?)(?=^##)", re.MULTILINE | re.DOTALL)
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)


@pytest.fixture(scope="module")
def demo_server(database_factory, tmp_path_factory):
    home = tmp_path_factory.mktemp("demo-analytics-jobs")
    server = ServerProcess(database_url=database_factory.create(), home=home, extra_args=["--demo"]).start()
    yield server
    server.stop()


def test_readme_submits_follows_and_downloads_an_analytics_job(demo_server, tmp_path):
    sections = SECTION.findall((REPO / "README.md").read_text())
    assert len(sections) == 1, "README.md lost its analytics-as-jobs section"
    blocks = BASH_BLOCK.findall(sections[0])
    assert len(blocks) == 1 and "analytics.submit" in blocks[0] and "geopera jobs watch" in blocks[0]
    token = (demo_server.home / "demo-token").read_text().strip()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
    env = {**clean, "TOKEN": token, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    script = blocks[0].replace("127.0.0.1:8080", f"127.0.0.1:{demo_server.http_port}")
    # `--server` defaults to 127.0.0.1:50051, the port `make serve` uses; here it is the test server's.
    env["GEOPERA_SERVER"] = demo_server.address
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True,
                            timeout=180, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "SUCCEEDED" in result.stdout and "analytics" in result.stdout
    answer = json.loads((tmp_path / "zonal_stats.json").read_text())
    assert answer["operation"] == "zonal_stats" and answer["result"]["zones"][0]["stats"]["mean"] > 0
