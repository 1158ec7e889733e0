"""README.md's webhook example, run as printed against `geopera serve --demo`
(what `make serve` runs, which allows a receiver on loopback) and its local
worker: the test message and the clip job's `job.succeeded` arrive, verified
by the standardwebhooks package."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.db import DatabaseFactory
from tests.support.server import REPO, ServerProcess
from tests.test_readme_grpcurl import _run

SECTION = re.compile(r"^## Webhooks\n(.*?)(?=^## )", re.MULTILINE | re.DOTALL)
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def webhook_blocks() -> list[str]:
    (section,) = SECTION.findall((REPO / "README.md").read_text())
    blocks: list[str] = PYTHON_BLOCK.findall(section)
    return blocks


@pytest.fixture(scope="module")
def demo(database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("readme_webhooks")
    server = ServerProcess(database_url=database_factory.create(), home=home, extra_args=["--demo"]).start()
    yield server
    server.stop()


def test_the_readme_webhook_example_runs_as_printed(demo: ServerProcess) -> None:
    (block,) = webhook_blocks()
    token = Path(demo.home / "demo-token").read_text().strip()
    result = _run(block, demo, token, interpreter="python")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["webhook.test", "job.succeeded True", "[204, 204]"], result.stdout
