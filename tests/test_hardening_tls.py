"""TLS (issue 10, hole 10): `geopera serve --tls-cert/--tls-key` serves gRPC
and HTTP over TLS, with a throwaway CA from `trustme`; the SDK, a plain HTTPS
client and a worker connect with that CA; plaintext is refused on both ports."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme
from geopera_sdk import Client

from geopera.v1 import catalog_pb2
from tests.conftest import TEST_SERVER_ENV, World, seed_world
from tests.jobs_support import STATUS, create_and_dispatch, wait_for_job_type, wait_terminal
from tests.support.client import KernelClient, RpcFailure
from tests.support.server import ServerProcess
from tests.support.workers import WorkerProcess


class Certificates:
    def __init__(self, directory: Path) -> None:
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = directory / "ca.pem"
        self.cert_file = directory / "server.pem"
        self.key_file = directory / "server.key"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(self.key_file))
        self.ca_pem = ca.cert_pem.bytes()

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca_pem)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_world(database_factory, tmp_path_factory, certs) -> Iterator[World]:
    home = tmp_path_factory.mktemp("tls-world")
    url = database_factory.create()
    server = ServerProcess(
        database_url=url,
        home=home,
        extra_env=TEST_SERVER_ENV,
        extra_args=["--tls-cert", str(certs.cert_file), "--tls-key", str(certs.key_file)],
    ).start()
    world = World(server=server, database_url=url, home=home)
    try:
        asyncio.run(seed_world(world))
        world.channel = grpc.secure_channel(server.address, certs.grpc_credentials())
        yield world
    finally:
        if world.channel is not None:
            world.channel.close()
        server.stop()


def test_the_sdk_executes_over_tls(tls_world, certs):
    with Client(tls_world.server.address, tls_world.tokens["alpha"], credentials=certs.grpc_credentials()) as client:
        result = client.execute("items.list", {"project_id": "alpha"})
    assert {item.name for item in result.items} == set(tls_world.items)


def test_https_with_the_ca(tls_world, certs):
    base = f"https://127.0.0.1:{tls_world.server.http_port}"
    request = urllib.request.Request(
        f"{base}/v1/op/projects.get",
        data=json.dumps({"project_id": "alpha"}).encode(),
        headers={"Authorization": f"Bearer {tls_world.tokens['alpha']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=certs.ssl_context(), timeout=30) as response:
        assert json.load(response)["project"]["id"] == "alpha"
    with urllib.request.urlopen(f"{base}/v1/openapi.json", context=certs.ssl_context(), timeout=30) as response:
        assert json.load(response)["servers"][0]["url"].startswith("https://")


def test_a_signed_https_url_serves_ranges(tls_world, certs):
    """Over TLS the bytes cannot go by sendfile(2): the same ranges, read and encrypted."""
    item_id = tls_world.items["s2l1c_slovenia_20150711_bgrn"]
    client = KernelClient(tls_world.channel, tls_world.tokens["alpha"])
    params = catalog_pb2.AssetsSignParams(resource_name=f"items/{item_id}/assets/data")
    url = client.execute("assets.sign", params).url  # type: ignore[attr-defined]
    assert url.startswith(f"https://127.0.0.1:{tls_world.server.http_port}/v1/items/{item_id}/assets/data?")
    whole, _ = client.download(f"items/{item_id}/assets/data")
    with urllib.request.urlopen(url, context=certs.ssl_context(), timeout=30) as response:
        assert response.read() == whole
    request = urllib.request.Request(url, headers={"Range": "bytes=1000-66535"})
    with urllib.request.urlopen(request, context=certs.ssl_context(), timeout=30) as response:
        assert response.status == 206 and response.read() == whole[1000:66536]


def test_a_worker_over_tls_completes_a_job(tls_world, certs):
    worker = WorkerProcess(
        tls_world.server.address, tls_world.tokens["worker"], tls_world.home, name="tls",
        extra_args=["--tls-ca", str(certs.ca_file)],
    ).start()  # fmt: skip
    try:
        wait_for_job_type(tls_world, "test_cog")
        client = tls_world.client("alpha")
        job = create_and_dispatch(client, "test_cog", {"name": "over-tls"}).job
        assert wait_terminal(client, job.id).status == STATUS.JOB_STATUS_SUCCEEDED
    finally:
        worker.stop()


def test_plaintext_is_refused_on_both_ports(tls_world):
    with grpc.insecure_channel(tls_world.server.address) as channel:
        with pytest.raises(RpcFailure) as info:
            KernelClient(channel, tls_world.tokens["alpha"]).execute(
                "projects.list", catalog_pb2.ProjectsListParams(), timeout=10
            )
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    request = urllib.request.Request(
        f"http://127.0.0.1:{tls_world.server.http_port}/v1/op/projects.list",
        data=b"{}",
        headers={"Authorization": f"Bearer {tls_world.tokens['alpha']}", "Content-Type": "application/json"},
    )
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(request, timeout=30).close()


def test_a_client_that_does_not_trust_the_ca_is_refused(tls_world):
    """TLS really authenticates the server: the system roots don't know our CA."""
    with grpc.secure_channel(tls_world.server.address, grpc.ssl_channel_credentials()) as channel:
        with pytest.raises(RpcFailure) as info:
            KernelClient(channel, tls_world.tokens["alpha"]).execute(
                "projects.list", catalog_pb2.ProjectsListParams(), timeout=10
            )
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
