"""The synchronous client is generated from the asyncio one (scripts/gen_sync_sdk.py)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "python" / "src" / "geopera_sdk"


def test_the_committed_sync_client_is_what_the_generator_makes_of_the_async_one() -> None:
    spec = importlib.util.spec_from_file_location("gen_sync_sdk", ROOT / "scripts" / "gen_sync_sdk.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (PACKAGE / "_client.py").read_text() == gen.generate((PACKAGE / "_aio.py").read_text()), (
        "_client.py is stale or hand-edited: run `make generate`"
    )


def test_the_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    script = (ROOT / "scripts" / "gen_sync_sdk.py").read_text()
    stale = tmp_path / "_client.py"
    stale.write_text((PACKAGE / "_client.py").read_text() + "# edited by hand\n")
    patched = script.replace('TARGET = PACKAGE / "_client.py"', f"TARGET = Path({str(stale)!r})")
    copy = tmp_path / "gen.py"
    copy.write_text(patched.replace("ROOT = Path(__file__).resolve().parent.parent", f"ROOT = Path({str(ROOT)!r})"))
    result = subprocess.run([sys.executable, str(copy), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "stale" in result.stderr


def _sdk_imports(path: Path) -> set[str]:
    """geopera_sdk modules `path` imports, at any level (TYPE_CHECKING blocks included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("geopera_sdk."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("geopera_sdk.")}
    return found


def test_the_sdk_modules_import_each_other_without_a_cycle() -> None:
    graph = {p.stem: _sdk_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join((*path, module))
        if module in done:
            return
        for imported in graph.get(module, ()):
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
