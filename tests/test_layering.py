"""The packages under src/ point one way: the server and the worker both import the shared
`raster` and `analytics` packages and never each other; `raster` imports none of the others,
`analytics` only `raster`, and neither imports gRPC, the database driver or the generated code
(they are plain geometry, rasters, definitions and the analytics engine).

Read from the syntax tree, so an import inside a function or under TYPE_CHECKING counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
NAMESPACE = "geopera_kernel"  # src/<package> installs as geopera_kernel.<package>

FORBIDDEN = {
    "server": {"worker"},
    "worker": {"server"},
    "raster": {"server", "worker", "analytics", "grpc", "psycopg", "psycopg_pool", "geopera", "google"},
    "analytics": {"server", "worker", "grpc", "psycopg", "psycopg_pool", "geopera", "google"},
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Absolute module names a file imports, with their line numbers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def top_package(module: str) -> str:
    """``geopera_kernel.server.app`` -> ``server``; ``grpc.aio`` -> ``grpc``."""
    parts = module.split(".")
    return parts[1] if parts[0] == NAMESPACE and len(parts) > 1 else parts[0]


def cross_imports(package: str, root: Path = SRC) -> list[str]:
    forbidden = FORBIDDEN[package]
    return [
        f"{path.relative_to(root)}:{line}: imports {module}"
        for path in sorted((root / package).rglob("*.py"))
        for line, module in imported_modules(path)
        if top_package(module) in forbidden
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_in_the_allowed_direction(package):
    assert (SRC / package).is_dir()
    assert cross_imports(package) == []


def test_the_check_sees_an_import_anywhere_in_a_module(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from geopera_kernel.worker.main import main\n\nif False:\n    import geopera_kernel.server.app\n"
    )
    assert imported_modules(module) == [(2, "geopera_kernel.worker.main"), (5, "geopera_kernel.server.app")]


def test_a_cross_import_through_our_namespace_is_caught(tmp_path):
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "m.py").write_text("from geopera_kernel.server.app import build_services\nimport grpc\n")
    assert cross_imports("worker", tmp_path) == ["worker/m.py:1: imports geopera_kernel.server.app"]
