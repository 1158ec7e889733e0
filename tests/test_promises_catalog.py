"""Promises of the catalog and the server settings that no other test held, each over a real
server: every items.create refusal with its code, ErrorInfo reason and field, and nothing
registered; uploads above GEOPERA_MAX_UPLOAD_BYTES; GEOPERA_MAX_MESSAGE_BYTES; and
GEOPERA_HTTP_LISTEN=off (no HTTP port, gRPC still serving)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

from geopera.v1 import catalog_pb2
from tests.conftest import SAMPLES, TEST_SERVER_ENV, World, seed_world
from tests.support.client import RpcFailure
from tests.support.server import ServerProcess

SAMPLE = SAMPLES / "s2l1c_slovenia_20150711_bgrn.tif"
MAX_MESSAGE_BYTES = 128 << 10
MAX_UPLOAD_BYTES = 100_000
DOMAIN = "geopera.v1"


def _fails(call, code: grpc.StatusCode, reason: str, home: Path | None = None) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        call()
    failure = info.value
    assert (failure.code, failure.reason, failure.domain) == (code, reason, DOMAIN), failure
    if home is not None:
        assert str(home) not in failure.message, failure.message  # no server path leaks
    return failure


def _items_named(world: World, name: str) -> list[str]:
    items = world.client("admin").execute("items.list", catalog_pb2.ItemsListParams(project_id="alpha", page_size=1000))
    return [item.id for item in items.items if item.name == name]


def _create(world: World, token: str = "alpha", **fields) -> catalog_pb2.ItemsCreateResult:
    fields.setdefault("project_id", "alpha")
    fields.setdefault("collection_id", "promises")
    return world.client(token).execute("items.create", catalog_pb2.ItemsCreateParams(**fields))


def _asset(key: str, upload_id: str) -> catalog_pb2.AssetInput:
    return catalog_pb2.AssetInput(key=key, upload_id=upload_id)


# -- items.create refusals --------------------------------------------------------------------


@pytest.fixture(scope="module")
def upload_id(world: World) -> str:
    """One real upload every refusal below names; refusals must leave it usable."""
    return world.client("alpha").upload("alpha", SAMPLE.read_bytes()).upload_id


def _bad_create_cases(up: str) -> list[tuple[str, dict, grpc.StatusCode, str, str]]:
    """(id, params, code, reason, field) for every refusal items.create validates."""
    ok = [_asset("data", up)]
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    return [
        ("no-assets", {"name": "a_20150711", "assets": []}, invalid, "ASSETS_REQUIRED", "assets"),
        ("duplicate-keys", {"name": "a_20150711", "assets": [_asset("data", up), _asset("data", up)]},
         invalid, "DUPLICATE_ASSET_KEY", "assets[1]"),
        ("empty-name", {"name": "", "assets": ok}, invalid, "INVALID_ITEM_NAME", "name"),
        ("name-with-slash", {"name": "a/b_20150711", "assets": ok}, invalid, "INVALID_ITEM_NAME", "name"),
        ("name-too-long", {"name": "n" * 201, "assets": ok}, invalid, "INVALID_ITEM_NAME", "name"),
        ("upper-case-key", {"name": "a_20150711", "assets": [_asset("Data", up)]},
         invalid, "INVALID_ASSET_KEY", "assets[0].key"),
        ("empty-key", {"name": "a_20150711", "assets": [_asset("data", up), _asset("", up)]},
         invalid, "INVALID_ASSET_KEY", "assets[1].key"),
        ("key-too-long", {"name": "a_20150711", "assets": [_asset("k" * 64, up)]},
         invalid, "INVALID_ASSET_KEY", "assets[0].key"),
        ("key-with-space", {"name": "a_20150711", "assets": [_asset("my data", up)]},
         invalid, "INVALID_ASSET_KEY", "assets[0].key"),
        ("key-trailing-newline", {"name": "a_20150711", "assets": [_asset("data\n", up)]},
         invalid, "INVALID_ASSET_KEY", "assets[0].key"),
        ("collection-with-slash", {"name": "a_20150711", "collection_id": "a/b", "assets": ok},
         invalid, "INVALID_COLLECTION_ID", "collection_id"),
        ("collection-leading-dash", {"name": "a_20150711", "collection_id": "-x", "assets": ok},
         invalid, "INVALID_COLLECTION_ID", "collection_id"),
        ("collection-too-long", {"name": "a_20150711", "collection_id": "c" * 64, "assets": ok},
         invalid, "INVALID_COLLECTION_ID", "collection_id"),
        ("collection-trailing-newline", {"name": "a_20150711", "collection_id": "c\n", "assets": ok},
         invalid, "INVALID_COLLECTION_ID", "collection_id"),
        ("no-source", {"name": "a_20150711", "assets": [catalog_pb2.AssetInput(key="data")]},
         invalid, "ASSET_SOURCE_REQUIRED", "assets[0]"),
        ("two-sources", {"name": "a_20150711", "assets": [
            catalog_pb2.AssetInput(key="data", upload_id=up, server_href=str(SAMPLE))]},
         invalid, "ASSET_SOURCE_REQUIRED", "assets[0]"),
    ]  # fmt: skip


CASE_IDS = [case[0] for case in _bad_create_cases("up_x")]


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_items_create_refuses_bad_requests_with_their_reason_and_field(world, upload_id, case_id):
    _, fields, code, reason, field = next(c for c in _bad_create_cases(upload_id) if c[0] == case_id)
    if "collection_id" not in fields:
        fields = {**fields, "collection_id": "promises"}
    name = fields["name"]
    failure = _fails(lambda: _create(world, **fields), code, reason, world.home)
    assert failure.violations and failure.violations[0][0] == field, failure.violations
    assert not name or not _items_named(world, name)


def test_every_refusal_leaves_the_upload_usable(world, upload_id):
    """Runs after the refusals above (same module upload): none of them consumed it."""
    name = f"after_refusals_{secrets.token_hex(3)}_20150711"
    item = _create(world, name=name, assets=[_asset("data", upload_id)]).item
    assert item.name == name and list(item.assets) == ["data"]


def test_an_unknown_upload_id_is_not_found(world):
    name = f"unknown_upload_{secrets.token_hex(3)}_20150711"
    failure = _fails(
        lambda: _create(world, name=name, assets=[_asset("data", "up_doesnotexist")]),
        grpc.StatusCode.NOT_FOUND,
        "UPLOAD_NOT_FOUND",
        world.home,
    )
    assert "up_doesnotexist" in failure.message
    assert _items_named(world, name) == []


def test_an_upload_of_another_project_is_not_found_and_stays_with_its_owner(world):
    """An upload id of project beta is, for alpha, an upload that does not exist: the
    answer is the same NOT_FOUND an unknown id gets, so it tells nothing about beta."""
    foreign = world.client("beta").upload("beta", SAMPLE.read_bytes()).upload_id
    name = f"foreign_upload_{secrets.token_hex(3)}_20150711"
    failure = _fails(
        lambda: _create(world, name=name, assets=[_asset("data", foreign)]),
        grpc.StatusCode.NOT_FOUND,
        "UPLOAD_NOT_FOUND",
        world.home,
    )
    assert "beta" not in failure.message
    assert _items_named(world, name) == []
    # Its owner still registers it: alpha's attempt did not consume it.
    item = _create(world, "beta", project_id="beta", name=name, assets=[_asset("data", foreign)]).item
    assert item.project_id == "beta"


def test_a_second_asset_with_an_unknown_upload_registers_nothing(world, tmp_path):
    """The first asset is good and inspected; the second fails: no item, nothing stored,
    and the good upload is still usable."""
    good = world.client("alpha").upload("alpha", SAMPLE.read_bytes()).upload_id
    name = f"half_{secrets.token_hex(3)}_20150711"
    storage = world.home / "storage" / "projects"
    before = {p for p in storage.rglob("*") if p.is_file()}
    _fails(
        lambda: _create(world, name=name, assets=[_asset("data", good), _asset("more", "up_missing")]),
        grpc.StatusCode.NOT_FOUND,
        "UPLOAD_NOT_FOUND",
        world.home,
    )
    assert _items_named(world, name) == []
    assert {p for p in storage.rglob("*") if p.is_file()} == before
    assert _create(world, name=name, assets=[_asset("data", good)]).item.name == name


# -- a server with small limits and no HTTP -----------------------------------------------------


@pytest.fixture(scope="module")
def limited(database_factory, tmp_path_factory) -> Iterator[World]:
    """A server started with GEOPERA_HTTP_LISTEN=off (no --http-listen flag), a 128 KiB
    message limit and a 100,000-byte upload limit."""
    home = tmp_path_factory.mktemp("limited")
    url = database_factory.create()
    env = {
        **TEST_SERVER_ENV,
        "GEOPERA_HTTP_LISTEN": "off",
        "GEOPERA_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        "GEOPERA_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
    }
    server = ServerProcess(database_url=url, home=home, extra_env=env, http_listen=None).start()
    state = World(server=server, database_url=url, home=home)
    try:
        asyncio.run(seed_world(state))
        state.channel = server.channel()
        yield state
    finally:
        if state.channel is not None:
            state.channel.close()
        server.stop()


def listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (its socket inodes in LISTEN state, from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_the_default_server_listens_on_grpc_and_http(world):
    """The check below can fail: a server with HTTP on shows both ports."""
    assert world.server.process is not None
    assert listening_ports(world.server.process.pid) == {world.server.port, world.server.http_port}
    assert world.server.http_port != 0 and "HTTP/JSON on http://" in world.server.log()


def test_http_listen_off_opens_no_http_port_and_grpc_still_serves(limited):
    server = limited.server
    assert server.process is not None
    assert server.port_file.read_text().split() == [str(server.port), "0"]
    assert listening_ports(server.process.pid) == {server.port}
    log = server.log()
    assert "HTTP/JSON off" in log and "HTTP/JSON on" not in log and "GEOPERA_HTTP " not in log
    projects = limited.client("alpha").execute("projects.list", catalog_pb2.ProjectsListParams())
    assert [p.id for p in projects.projects] == ["alpha"]


def _polygon(vertices: int) -> struct_pb2.Struct:
    """A square around the samples drawn with ``vertices`` points (~30 bytes each on the wire)."""
    west, south, east, north = 14.50, 45.80, 14.62, 45.92
    side = vertices // 4
    ring = []
    for i in range(side):
        ring.append([west + (east - west) * i / side, south])
    for i in range(side):
        ring.append([east, south + (north - south) * i / side])
    for i in range(side):
        ring.append([east - (east - west) * i / side, north])
    for i in range(side):
        ring.append([west, north - (north - south) * i / side])
    ring.append(ring[0])
    geometry = struct_pb2.Struct()
    geometry.update({"type": "Polygon", "coordinates": [ring]})
    return geometry


def _list_within(geometry: struct_pb2.Struct) -> catalog_pb2.ItemsListParams:
    return catalog_pb2.ItemsListParams(project_id="alpha", collection_id="s2_slovenia", intersects=geometry)


def test_a_request_above_max_message_bytes_is_resource_exhausted_and_a_smaller_one_passes(limited):
    client = limited.client("alpha")
    small, large = _list_within(_polygon(2_000)), _list_within(_polygon(8_000))
    assert small.ByteSize() < MAX_MESSAGE_BYTES - 1024 and large.ByteSize() > MAX_MESSAGE_BYTES + 1024
    assert len(client.execute("items.list", small).items) == 7
    with pytest.raises(RpcFailure) as info:
        client.execute("items.list", large)
    failure = info.value
    assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED, failure
    # gRPC's own message says what happened and names the limit.
    assert "larger than max" in failure.message.lower() and str(MAX_MESSAGE_BYTES) in failure.message, failure
    # The refusal costs nothing else: the server answers the next call.
    assert len(client.execute("items.list", _list_within(_polygon(8))).items) == 7


def test_the_default_message_limit_takes_the_request_the_small_limit_refuses(world):
    assert len(world.client("alpha").execute("items.list", _list_within(_polygon(8_000))).items) == 7


def test_an_upload_above_max_upload_bytes_is_refused_and_keeps_nothing(limited):
    client = limited.client("alpha")
    staging = limited.home / "storage" / ".scratch" / "uploads"
    before = set(staging.iterdir()) if staging.exists() else set()
    failure = _fails(
        lambda: client.upload("alpha", b"x" * (MAX_UPLOAD_BYTES + 1), chunk=32 << 10),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "UPLOAD_TOO_LARGE",
        limited.home,
    )
    assert str(MAX_UPLOAD_BYTES) in failure.message
    assert (set(staging.iterdir()) if staging.exists() else set()) == before
    at_limit = client.upload("alpha", b"x" * MAX_UPLOAD_BYTES, chunk=32 << 10)
    assert at_limit.committed_size == MAX_UPLOAD_BYTES


def test_max_upload_bytes_is_not_the_default(world):
    """The same payload passes the default 4 GiB limit: the refusal above is the setting's."""
    upload = world.client("alpha").upload("alpha", b"x" * (MAX_UPLOAD_BYTES + 1), chunk=32 << 10)
    assert upload.committed_size == MAX_UPLOAD_BYTES + 1
