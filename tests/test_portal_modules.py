"""The portal's DOM-free modules (JSON Schema reading, chart scales, AOI area) under
`node --test` (tests/browser/js/*.test.mjs): they need node, not a browser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed (make test needs Node.js >= 20)")
def test_the_portal_modules_pass_their_node_tests():
    tests = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests/browser/js").glob("*.test.mjs"))
    assert tests
    done = subprocess.run([NODE or "node", "--test", *tests], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# fail 0" in done.stdout
