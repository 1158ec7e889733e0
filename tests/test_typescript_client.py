"""The TypeScript client (clients/typescript) against a live server: what
`make serve` runs (`geopera serve --demo`, with its local worker), then `npm
test` there with GEOPERA_TARGET / GEOPERA_TOKEN / GEOPERA_PROJECT pointing at
it, as the client's README shows.

`npm test` type-checks (tsc) and runs node's test runner: create_and_dispatch
of a `clip` job (a job type `make serve` offers, so the suite runs against it
as well), WatchJob to SUCCEEDED (and resumed after a dropped stream),
zonal_stats NDVI, downloads (DownloadAsset, verified, resumed after a cut),
and typed errors. `npm run example` runs
examples/quickstart.ts, which the README points to. Needs `node` and `npm` on PATH (CI
installs them in .ci/run): without them these tests fail, they never skip.
`npm ci` runs only when node_modules is missing or older than the lockfile.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from geopera_sdk import Client

from tests.conftest import REPO
from tests.support.server import ServerProcess

CLIENT = REPO / "clients" / "typescript"
NODE = shutil.which("node")
NPM = shutil.which("npm")


def _npm_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOPERA_", "NPM_CONFIG_", "npm_"))}
    env.update({"NPM_CONFIG_UPDATE_NOTIFIER": "false", "NPM_CONFIG_FUND": "false", "NO_COLOR": "1"})
    env.update(extra or {})
    return env


def _installed(client: Path) -> bool:
    marker = client / "node_modules" / ".package-lock.json"  # written by npm ci / npm install
    lock = client / "package-lock.json"
    return marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime


@pytest.fixture(scope="module")
def node_modules() -> None:
    """`npm ci` once; later runs reuse node_modules (and npm's cache)."""
    assert NODE is not None and NPM is not None, (
        "node and npm are needed for the TypeScript client tests (clients/typescript); install Node.js >= 20"
    )
    if _installed(CLIENT):
        return
    assert NPM is not None
    done = subprocess.run(
        [NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=CLIENT, env=_npm_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"npm ci failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def demo(node_modules: None, database_factory, tmp_path_factory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """What `make serve` runs (`geopera serve --demo`: the demo project, its items and a
    local worker with the built-in job types), and the env the README gives `npm test`."""
    home = tmp_path_factory.mktemp("typescript")
    server = ServerProcess(database_url=database_factory.create(), home=home, extra_args=["--demo"]).start()
    env = {
        "GEOPERA_TARGET": server.address,
        "GEOPERA_TOKEN": (home / "demo-token").read_text().strip(),
        "GEOPERA_PROJECT": "demo",
    }
    # A newcomer starts after the banner; the demo worker may still be connecting.
    with Client(server.address, env["GEOPERA_TOKEN"]) as client:
        deadline = time.monotonic() + 60
        while not any(t.job_type_id == "clip" and t.connected_workers for t in client.job_types.list()):
            assert time.monotonic() < deadline, "the demo worker never offered clip"
            time.sleep(0.2)
    yield server, env
    server.stop()


def test_the_typescript_client_passes_its_live_suite(demo: tuple[ServerProcess, dict[str, str]]) -> None:
    assert NPM is not None
    server, variables = demo
    env = _npm_env(variables)  # no GEOPERA_ITEM_ID: the suite finds the sample by name
    done = subprocess.run([NPM, "test"], cwd=CLIENT, env=env, capture_output=True, text=True, timeout=180)
    output = f"{done.stdout}\n{done.stderr}"
    server_log = server.log()[-4000:]
    assert done.returncode == 0, f"npm test failed ({done.returncode}):\n{output}\n--- server log ---\n{server_log}"
    passed = re.search(r"^\S*\s*pass (\d+)$", done.stdout, re.MULTILINE)
    failed = re.search(r"^\S*\s*fail (\d+)$", done.stdout, re.MULTILINE)
    assert passed and failed, f"no test summary in the output:\n{output}"
    assert int(failed.group(1)) == 0 and int(passed.group(1)) >= 6, output
    for name in ("create_and_dispatch runs clip", "resumes after a dropped stream", "zonal_stats", "assets.download"):
        assert name in done.stdout, f"{name!r} did not run:\n{output}"


def test_npm_test_fails_without_a_live_server_in_the_environment(node_modules: None) -> None:
    """The live suite never skips silently: without the env it fails."""
    assert NPM is not None
    done = subprocess.run([NPM, "test"], cwd=CLIENT, env=_npm_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode != 0, done.stdout
    assert "GEOPERA_TARGET" in done.stdout + done.stderr


def test_the_committed_typescript_code_matches_the_protos(node_modules: None) -> None:
    """clients/typescript/src/gen is generated from proto/ (run `npm run generate` there after a proto change)."""
    assert NPM is not None
    done = subprocess.run(
        [NPM, "run", "--silent", "check-generated"], cwd=CLIENT, env=_npm_env(), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


def test_the_example_runs_as_printed(demo: tuple[ServerProcess, dict[str, str]]) -> None:
    """examples/quickstart.ts against the demo server, as the README tells a newcomer to run it
    (GEOPERA_PROJECT defaults to `demo`)."""
    assert NPM is not None
    _, variables = demo
    env = _npm_env({"GEOPERA_TARGET": variables["GEOPERA_TARGET"], "GEOPERA_TOKEN": variables["GEOPERA_TOKEN"]})
    done = subprocess.run([NPM, "run", "--silent", "example"], cwd=CLIENT, env=env, capture_output=True, text=True,
                          timeout=180)  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert not done.stderr.strip(), done.stderr
    lines = done.stdout.splitlines()
    assert any(line.split()[1:2] == ["s2l1c_slovenia_20150711_bgrn"] for line in lines), done.stdout
    ndvi = next(line for line in lines if line.startswith("NDVI mean")).split()
    assert 0.3 < float(ndvi[2]) < 1.0 and ndvi[4].isdigit(), ndvi
    job_id, status, outputs = lines[-1].split()
    assert job_id.startswith("job_") and status == "succeeded" and outputs.startswith("it_"), lines[-1]


def _engine_floor(spec: str) -> int | None:
    """The major version of a `>=N` (or `>=N.x.y`) engines range; None for other forms."""
    match = re.fullmatch(r">=\s*(\d+)(?:\.\d+)*", spec.strip())
    return int(match.group(1)) if match else None


def test_the_locked_packages_agree_with_the_declared_node() -> None:
    """No package in the lockfile needs a newer Node than package.json promises
    (npm ci would warn EBADENGINE), and the local node is one it promises."""
    package = json.loads((CLIENT / "package.json").read_text())
    floor = _engine_floor(package["engines"]["node"])
    assert floor is not None
    lock = json.loads((CLIENT / "package-lock.json").read_text())
    too_new = {
        path: entry["engines"]["node"]
        for path, entry in lock["packages"].items()
        if path
        and isinstance(entry.get("engines"), dict)
        and (_engine_floor(entry["engines"].get("node", "")) or 0) > floor
    }
    assert not too_new, f"package.json says node {package['engines']['node']}, these need more: {too_new}"
    # Every install script is reviewed (npm 11 warns about the others; npm 12 skips them).
    allowed = package.get("allowScripts", {})
    unreviewed = {
        path.rsplit("node_modules/", 1)[-1]
        for path, entry in lock["packages"].items()
        if entry.get("hasInstallScript") and path.rsplit("node_modules/", 1)[-1] not in allowed
    }
    assert not unreviewed, f"install scripts not in allowScripts: {sorted(unreviewed)}"
    if NODE is not None:
        version = subprocess.run([NODE, "--version"], capture_output=True, text=True, check=True).stdout
        assert int(version.lstrip("v").split(".")[0]) >= floor, version


def test_npm_ci_prints_no_warning(tmp_path: Path, node_modules: None) -> None:
    """A newcomer's `npm ci` (here in a copy of the package files, from npm's cache) warns about nothing."""
    assert NPM is not None
    for name in ("package.json", "package-lock.json"):
        shutil.copy(CLIENT / name, tmp_path / name)
    done = subprocess.run(
        [NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=tmp_path, env=_npm_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if "warn" in line.lower()]
    assert not warnings, "\n".join(warnings)
