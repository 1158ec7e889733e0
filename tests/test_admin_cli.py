"""`geopera admin` reaches the same database as a running server: the embedded
one under GEOPERA_HOME, or the one in GEOPERA_DATABASE_URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import pytest

from geopera.v1 import catalog_pb2, credits_pb2
from tests.support.client import KernelClient, RpcFailure
from tests.support.server import REPO, ServerProcess


def admin(home, *args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
    env["GEOPERA_HOME"] = str(home)
    if database_url:
        env["GEOPERA_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "geopera_kernel.server.cli", "admin", *args], cwd=REPO, env=env, capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def _ok(result: subprocess.CompletedProcess[str]):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("embedded", [True, False], ids=["embedded", "service"])
def test_admin_beside_a_running_server(tmp_path, database_url, embedded):
    home = tmp_path / "home"
    url = None if embedded else database_url
    # No token cache, so a revocation shows at once.
    server = ServerProcess(database_url=url, home=home, extra_env={"GEOPERA_TOKEN_CACHE_SECONDS": "0"}).start(
        timeout=120
    )
    try:
        _ok(admin(home, "project", "create", "acme", "--display-name", "ACME", database_url=url))
        grant = _ok(admin(home, "credits", "grant", "acme", "250", database_url=url))
        assert grant["available"] == 250
        token = _ok(
            admin(home, "token", "create", "--name", "alice", "--project", "acme", "--scope", "catalog:read",
                  "--scope", "credits:read", database_url=url)
        )["token"]  # fmt: skip
        assert token.startswith("gpk_")
        with server.channel() as channel:
            client = KernelClient(channel, token)
            project = client.execute("projects.get", catalog_pb2.ProjectsGetParams(project_id="acme")).project
            assert project.display_name == "ACME"
            balance = client.execute(
                "credits.balance.get", credits_pb2.CreditsBalanceGetParams(project_id="acme")
            ).balance
            assert (balance.available, balance.granted_total) == (250, 250)
            with pytest.raises(RpcFailure) as info:
                client.execute("items.create", catalog_pb2.ItemsCreateParams(project_id="acme"))
            assert (info.value.code, info.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE")
        listed = _ok(admin(home, "token", "list", database_url=url))
        assert [t["name"] for t in listed] == ["alice"] and "token" not in listed[0]
        assert token not in json.dumps(listed)
        assert [p["project_id"] for p in _ok(admin(home, "project", "list", database_url=url))] == ["acme"]
        duplicate = admin(home, "project", "create", "acme", database_url=url)
        assert duplicate.returncode == 1 and "PROJECT_EXISTS" in duplicate.stderr
        bad = admin(home, "project", "create", "Not Valid!", database_url=url)
        assert bad.returncode == 1 and "INVALID_PROJECT_ID" in bad.stderr
        _ok(admin(home, "token", "revoke", listed[0]["id"], database_url=url))
        with server.channel() as channel, pytest.raises(RpcFailure) as info:
            KernelClient(channel, token).execute("projects.get", catalog_pb2.ProjectsGetParams(project_id="acme"))
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert admin(home, "token", "revoke", listed[0]["id"], database_url=url).returncode == 2
    finally:
        assert server.stop() == 0


def test_admin_on_the_embedded_database_prints_no_warning(tmp_path):
    """A newcomer's first `geopera admin` call (embedded PostgreSQL, a shell without
    XDG_RUNTIME_DIR as in containers and CI) writes its JSON and nothing on stderr."""
    env_without_runtime_dir = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env_without_runtime_dir = {k: v for k, v in env_without_runtime_dir.items() if not k.startswith("GEOPERA_")}
    env_without_runtime_dir["GEOPERA_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [sys.executable, "-m", "geopera_kernel.server.cli", "admin", "project", "list"], cwd=REPO,
        env=env_without_runtime_dir,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert result.stderr == ""
