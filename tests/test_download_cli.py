"""`geopera download` as a user runs it: a real CLI process against a real
server (the seeded world), writing item assets and analytics artifacts to
files and stdout, verified against the stored bytes; refusals (other project,
missing scope, no token, unknown asset, wrong checksum, no server) exit
non-zero with the reason and leave no file; a stream cut midway resumes;
`--signed-url` prints a URL that curl and GDAL open with no token."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from google.protobuf import struct_pb2

from geopera.v1 import analytics_pb2, catalog_pb2
from tests.conftest import SAMPLES, World
from tests.sdk.proxy import Fault, FaultyProxy
from tests.support.http_downloads import fetch
from tests.support.server import REPO

SCENE = "s2l1c_slovenia_20150711_bgrn"
STACK = "s2l1c_slovenia_ndvi_68dates"  # 2.7 MB: three 1 MiB chunks
AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())


def download(*args: str, token: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
    if token is not None:
        env["GEOPERA_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "geopera_kernel.server.cli", "download", *args],
        cwd=cwd, env=env, capture_output=True, timeout=120,
    )  # fmt: skip


def _asset(world: World, name: str) -> catalog_pb2.ItemsGetResult:
    return world.client("alpha").execute("items.get", catalog_pb2.ItemsGetParams(item_id=world.items[name])).item


def _failed(result: subprocess.CompletedProcess[bytes], status: int = 1) -> str:
    assert result.returncode == status, result.stderr
    assert result.stdout == b""
    return result.stderr.decode()


def test_an_asset_to_a_file_is_the_stored_bytes(world, tmp_path):
    asset = _asset(world, STACK).assets["data"]
    dest = tmp_path / "stack.tif"
    result = download(asset.href, "-o", str(dest), "--server", world.server.address, "--sha256", asset.sha256,
                      token=world.tokens["alpha"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    data = dest.read_bytes()
    assert hashlib.sha256(data).hexdigest() == asset.sha256 == summary["sha256"]
    assert summary == {"resource_name": asset.href, "path": str(dest), "size_bytes": asset.size_bytes,
                       "sha256": asset.sha256, "media_type": asset.media_type}  # fmt: skip
    assert len(data) == asset.size_bytes > 2 << 20
    assert not dest.with_name("stack.tif.part").exists()


def test_to_stdout_with_the_token_flag(world):
    asset = _asset(world, SCENE).assets["data"]
    result = download(asset.href, "-o", "-", "--server", world.server.address, "--token", world.tokens["alpha"])
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(result.stdout).hexdigest() == asset.sha256 and len(result.stdout) == asset.size_bytes
    # A reader that stops early (`| head -c`): the download stops quietly, no traceback.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
    stack = _asset(world, STACK).assets["data"].href
    command = (f"{sys.executable} -m geopera_kernel.server.cli download {stack} -o - --server {world.server.address}"
               f" | head -c 10 | wc -c")  # fmt: skip
    piped = subprocess.run(["bash", "-c", command], cwd=REPO, env={**env, "GEOPERA_TOKEN": world.tokens["alpha"]},
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert piped.stdout.strip() == "10" and piped.stderr == "", piped.stderr


def test_the_default_file_name_comes_from_the_resource_and_media_type(world, tmp_path):
    item_id = world.items[SCENE]
    result = download(f"items/{item_id}/assets/data", "--server", world.server.address, token=world.tokens["alpha"],
                      cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == [f"{item_id}_data.tif"]
    assert json.loads(result.stdout)["path"] == f"{item_id}_data.tif"
    # A folder as the output: the default name inside it.
    (tmp_path / "into").mkdir()
    again = download(f"items/{item_id}/assets/data", "-o", str(tmp_path / "into"), "--server",
                     world.server.address, token=world.tokens["alpha"])  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "into" / f"{item_id}_data.tif").read_bytes() == (tmp_path / f"{item_id}_data.tif").read_bytes()


def test_an_artifact_named_by_its_http_url(world, tmp_path):
    params = struct_pb2.Struct()
    params.update({
        "before_item_id": world.items[SCENE], "after_item_id": world.items["s2l1c_slovenia_20150909_bgrn"],
        "index_name": "NDVI", "change_threshold": 0.05, "geometry": AOI,
    })  # fmt: skip
    response = world.client("alpha").execute(
        "analytics.execute", analytics_pb2.AnalyticsExecuteParams(operation="change_detection", params=params),
        timeout=120,
    )  # fmt: skip
    quicklook = next(o for o in response.outputs if o.key == "quicklook_png")
    url = f"{world.server.http_url}/v1/{quicklook.href}?expires=1&signature=x"
    result = download(url, "--server", world.server.address, token=world.tokens["alpha"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / f"{quicklook.id}.png"
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert hashlib.sha256(written.read_bytes()).hexdigest() == quicklook.sha256
    refused = download(quicklook.href, "-o", str(tmp_path / "x.png"), "--server", world.server.address,
                       token=world.tokens["beta"])  # fmt: skip
    assert "PERMISSION_DENIED PROJECT_ACCESS_DENIED" in _failed(refused)
    assert not (tmp_path / "x.png").exists()


def test_another_projects_asset_is_refused_and_writes_nothing(world, tmp_path):
    beta_item = next(iter(world.beta_items.values()))
    dest = tmp_path / "theirs.tif"
    result = download(f"items/{beta_item}/assets/data", "-o", str(dest), "--server", world.server.address,
                      token=world.tokens["alpha"])  # fmt: skip
    assert "PERMISSION_DENIED PROJECT_ACCESS_DENIED" in _failed(result)
    assert list(tmp_path.iterdir()) == []


def test_a_token_without_the_scope_and_no_token_are_refused(world, tmp_path):
    href = f"items/{world.items[SCENE]}/assets/data"
    narrow = world.make_token(scopes=["credits:read"], projects=["alpha"])
    missing = download(href, "-o", str(tmp_path / "a.tif"), "--server", world.server.address, token=narrow)
    assert "PERMISSION_DENIED MISSING_SCOPE" in _failed(missing)
    anonymous = download(href, "-o", str(tmp_path / "a.tif"), "--server", world.server.address)
    assert "UNAUTHENTICATED" in _failed(anonymous)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("items/{item}/assets/nope", "NOT_FOUND ASSET_NOT_FOUND"),
        ("it_x/data", "INVALID_ARGUMENT INVALID_RESOURCE_NAME"),
    ],
    ids=["unknown-asset", "bad-name"],
)
def test_a_resource_that_is_not_there_is_a_clear_error(world, tmp_path, resource, expected):
    result = download(resource.format(item=world.items[SCENE]), "-o", str(tmp_path / "a"), "--server",
                      world.server.address, token=world.tokens["alpha"])  # fmt: skip
    assert expected in _failed(result)
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_checksum_is_refused_and_leaves_no_file(world, tmp_path):
    href = f"items/{world.items[SCENE]}/assets/data"
    result = download(href, "-o", str(tmp_path / "a.tif"), "--sha256", "0" * 64, "--server", world.server.address,
                      token=world.tokens["alpha"])  # fmt: skip
    assert "DATA_LOSS CHECKSUM_MISMATCH" in _failed(result)
    assert list(tmp_path.iterdir()) == []
    malformed = download(href, "--sha256", "abc", "--server", world.server.address, token=world.tokens["alpha"])
    assert "--sha256" in _failed(malformed, status=2)


def test_no_server_and_an_unwritable_output_are_clear_errors(world, tmp_path):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{free.getsockname()[1]}"
    href = f"items/{world.items[SCENE]}/assets/data"
    unreachable = download(href, "-o", str(tmp_path / "a.tif"), "--server", nobody, token=world.tokens["alpha"])
    assert "UNAVAILABLE" in (message := _failed(unreachable)) and f"is a kernel serving {nobody}?" in message
    unwritable = download(href, "-o", str(tmp_path / "no" / "such" / "a.tif"), "--server", world.server.address,
                          token=world.tokens["alpha"])  # fmt: skip
    assert "cannot write the output" in _failed(unwritable, status=2)
    assert list(tmp_path.iterdir()) == []


def test_a_stream_cut_midway_resumes_and_verifies(world, tmp_path):
    asset = _asset(world, STACK).assets["data"]
    with FaultyProxy(world.server.port) as proxy:
        proxy.break_next_connection(Fault(after_response_bytes=1_300_000))
        result = download(asset.href, "-o", str(tmp_path / "stack.tif"), "--server", proxy.address,
                          token=world.tokens["alpha"])  # fmt: skip
        assert proxy.resets == 1
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256((tmp_path / "stack.tif").read_bytes()).hexdigest() == asset.sha256


def test_a_signed_url_instead_of_the_bytes_opens_with_no_token(world, tmp_path):
    asset = _asset(world, SCENE).assets["data"]
    signed = download(asset.href, "--signed-url", "--ttl", "600", "--server", world.server.address,
                      token=world.tokens["alpha"])  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    url = signed.stdout.decode().strip()
    assert url.startswith(f"{world.server.http_url}/v1/{asset.href}?") and "\n" not in url
    assert signed.stderr.decode().startswith("expires ")
    whole = fetch(url)
    assert whole.status == 200 and hashlib.sha256(whole.body).hexdigest() == asset.sha256
    assert fetch(url, headers={"Range": "bytes=0-99"}).body == whole.body[:100]
    # What the README shows: GDAL reads the COG through the URL (`rio info /vsicurl/<url>`).
    info = subprocess.run([str(Path(sys.executable).parent / "rio"), "info", f"/vsicurl/{url}"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert info.returncode == 0, info.stderr
    with rasterio.open(io.BytesIO(whole.body)) as stored:
        assert json.loads(info.stdout)["count"] == stored.count and json.loads(info.stdout)["width"] == stored.width
    # The download's rules decide: another project's asset, a TTL out of range, flags that download.
    beta_item = next(iter(world.beta_items.values()))
    other = download(f"items/{beta_item}/assets/data", "--signed-url", "--server", world.server.address,
                     token=world.tokens["alpha"])  # fmt: skip
    assert "PERMISSION_DENIED PROJECT_ACCESS_DENIED" in _failed(other)
    too_long = download(asset.href, "--signed-url", "--ttl", "604801", "--server", world.server.address,
                        token=world.tokens["alpha"])  # fmt: skip
    assert "INVALID_ARGUMENT INVALID_TTL" in _failed(too_long)
    both = download(asset.href, "--signed-url", "-o", str(tmp_path / "x"), "--server", world.server.address)
    assert "--signed-url" in _failed(both, status=2)
    assert "--ttl" in _failed(download(asset.href, "--ttl", "60", "--server", world.server.address), status=2)
