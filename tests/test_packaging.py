"""The three distributions carry the licence they declare, with its text, and the sample
data's own terms travel beside it (NOTICE)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("distribution", ["geopera-kernel", "geopera-api", "geopera-sdk"])
def test_each_distribution_declares_apache_2_and_ships_its_text(distribution):
    metadata = importlib.metadata.metadata(distribution)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "LICENSE" in metadata.get_all("License-File")
    assert "Typing :: Typed" in metadata.get_all("Classifier")
    shipped = [f for f in importlib.metadata.files(distribution) if f.name == "LICENSE"]
    assert shipped and "Apache License" in shipped[0].read_text() and "Version 2.0" in shipped[0].read_text()


def test_the_licence_texts_are_one_text_and_the_notice_names_the_data_terms():
    text = (REPO / "LICENSE").read_text()
    assert (REPO / "generated" / "LICENSE").read_text() == text
    assert (REPO / "clients" / "python" / "LICENSE").read_text() == text
    notice = (REPO / "NOTICE").read_text()
    assert "Copernicus Sentinel data" in notice
    assert (REPO / "data" / "s2_slovenia" / "LICENSE.eo-learn").exists()
    assert "NOTICE" in importlib.metadata.metadata("geopera-kernel").get_all("License-File")


@pytest.mark.parametrize(
    ("project", "files"),
    [
        (".", ["pyproject.toml", "README.md", "LICENSE", "NOTICE", "src", "namespace"]),
        ("generated", ["pyproject.toml", "LICENSE", "geopera"]),
        ("clients/python", ["pyproject.toml", "README.md", "LICENSE", "src"]),
    ],
    ids=["geopera-kernel", "geopera-api", "geopera-sdk"],
)
def test_an_editable_install_builds_without_a_warning(tmp_path, project, files):
    """What `make install` builds (PEP 660 editable wheels) prints no deprecation or
    setuptools warning: a newcomer's first command shows nothing to worry about."""
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "project"
    copy.mkdir()
    for name in files:
        source = REPO / project / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, copy / name)
    (tmp_path / "wheel").mkdir()
    build = f"from setuptools import build_meta; print(build_meta.build_editable({str(tmp_path / 'wheel')!r}))"
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", build], cwd=copy, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for sign in ("Warning", "deprecated", "careful"):
        assert sign not in output, output


def test_the_kernel_installs_under_its_own_name_only(tmp_path):
    """A wheel of the kernel holds one top-level import package, geopera_kernel (server, worker
    and raster inside it, with their SQL and typing marker), and no `server` or `worker` of its
    own that another distribution could also install."""
    import shutil
    import subprocess
    import sys
    import zipfile

    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE"):
        shutil.copy(REPO / name, copy / name)
    shutil.copytree(REPO / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "namespace", copy / "namespace", symlinks=True,
                    ignore=shutil.ignore_patterns("*.egg-info"))  # fmt: skip
    build = f"from setuptools import build_meta; print(build_meta.build_wheel({str(tmp_path)!r}))"
    result = subprocess.run([sys.executable, "-c", build], cwd=copy, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    wheel = tmp_path / result.stdout.strip().splitlines()[-1]
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"geopera_kernel"}
    for expected in (
        "geopera_kernel/server/cli.py",
        "geopera_kernel/worker/__main__.py",
        "geopera_kernel/raster/geo.py",
        "geopera_kernel/server/store/queries/jobs.sql",
        "geopera_kernel/server/py.typed",
    ):
        assert expected in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "geopera = geopera_kernel.server.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_old_top_level_names_are_not_importable():
    import importlib.util

    assert importlib.util.find_spec("geopera_kernel.server") is not None
    for name in ("server", "worker", "raster", "analytics"):
        assert importlib.util.find_spec(name) is None, name
