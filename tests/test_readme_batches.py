"""README's batch example (Processing jobs), run as printed against `geopera
serve --demo` and its local worker (only the address differs): a batch of clips
followed to the end on one stream, then one of them resubmitted."""

from __future__ import annotations

import re

import pytest

from tests.support.server import REPO, ServerProcess
from tests.test_readme_grpcurl import _run

BLOCK = re.compile(r"```python\n(\s*# batches: .*?)```", re.DOTALL)


@pytest.fixture(scope="module")
def demo_server(database_factory, tmp_path_factory):
    home = tmp_path_factory.mktemp("demo-batches")
    server = ServerProcess(database_url=database_factory.create(), home=home, extra_args=["--demo"]).start()
    yield server
    server.stop()


def _example() -> str:
    blocks = BLOCK.findall((REPO / "README.md").read_text())
    assert len(blocks) == 1, "README.md lost its batch example"
    lines = blocks[0].splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines)


def test_the_readme_batch_example_runs_as_printed(demo_server):
    token = (demo_server.home / "demo-token").read_text().strip()
    result = _run(_example(), demo_server, token, interpreter="python")
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()[:2]
    batch_id, statuses = first.split(" ", 1)
    assert batch_id.startswith("batch_") and statuses == "['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']"
    assert second == "True SUCCEEDED"
