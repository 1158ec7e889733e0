"""README's STAC API example, run exactly as printed (only the port differs)
against `geopera serve --demo`, what `make serve` runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.server import REPO, ServerProcess
from tests.test_readme_grpcurl import PYTHON_BLOCK, _run

SECTION = re.compile(r"^## STAC API\n(.*?)(?=^## )", re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def demo_server(database_factory, tmp_path_factory):
    home = tmp_path_factory.mktemp("demo-stac")
    server = ServerProcess(database_url=database_factory.create(), home=home, extra_args=["--demo"]).start()
    yield server
    server.stop()


def test_the_readme_pystac_client_example_prints_the_august_scenes(demo_server):
    (section,) = SECTION.findall((REPO / "README.md").read_text())
    (block,) = PYTHON_BLOCK.findall(section)
    token = Path(demo_server.home / "demo-token").read_text().strip()
    result = _run(block, demo_server, token, interpreter="python")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["s2l1c_slovenia_20150820_bgrn", "2015-08-20", "4"],
        ["s2l1c_slovenia_20150830_bgrn", "2015-08-30", "4"],
    ]
