"""The quickstart as a newcomer runs it: `geopera serve --demo` (what `make
serve` runs), the grpcurl line it prints, and every grpcurl command in README.md,
each executed as printed with the grpcurl binary (only the address differs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.server import REPO, ServerProcess

GRPCURL_SECTION = re.compile(r"^## Talking to it with grpcurl\n(.*?)^## ", re.MULTILINE | re.DOTALL)
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)


def readme_grpcurl_blocks() -> list[str]:
    """Every bash block of the grpcurl section but the `export` one; each runs
    as one script, exactly as printed."""
    section = GRPCURL_SECTION.search((REPO / "README.md").read_text())
    assert section, "README.md lost its grpcurl section"
    return [b for b in BASH_BLOCK.findall(section.group(1)) if not b.lstrip().startswith("export")]


@pytest.fixture(scope="module")
def demo_server(database_factory, tmp_path_factory):
    home = tmp_path_factory.mktemp("demo")
    server = ServerProcess(database_url=database_factory.create(), home=home, extra_args=["--demo"]).start()
    yield server
    server.stop()


def _run(command: str, address: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOKEN": token, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-c", command.replace("127.0.0.1:50051", address)],
        env=env, capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip


def test_the_printed_quickstart_command_works_as_printed(demo_server):
    printed = [line.strip() for line in demo_server.log().splitlines() if "KernelService/Execute" in line]
    assert len(printed) == 1, demo_server.log()
    result = subprocess.run(["bash", "-c", printed[0]], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["operation"] == "items.list"
    assert response["result"]["@type"] == "type.googleapis.com/geopera.v1.ItemsListResult"
    names = {item["name"] for item in response["result"]["items"]}
    assert "s2l1c_slovenia_20150711_bgrn" in names
    assert len(names) == 7


def test_readme_has_the_commands_we_promise():
    text = "\n".join(readme_grpcurl_blocks())
    assert "grpcurl -plaintext 127.0.0.1:50051 list" in text
    assert "describe geopera.v1.ClipCreateFromItemParams" in text
    assert text.count("KernelService/Execute") >= 4 and "KernelService/WatchJob" in text


@pytest.mark.parametrize("index", range(len(readme_grpcurl_blocks())))
def test_readme_grpcurl_block(demo_server, index):
    block = readme_grpcurl_blocks()[index]
    token = Path(demo_server.home / "demo-token").read_text().strip()
    result = _run(block, demo_server.address, token)
    output = result.stdout
    if '"bbox": [1, 2, 3]' in block:
        assert result.returncode != 0
        assert "InvalidArgument" in output + result.stderr and "INVALID_BBOX" in output + result.stderr
        return
    assert result.returncode == 0, result.stderr
    if "grpcurl -plaintext 127.0.0.1:50051 list" in block:
        for service in ("geopera.v1.KernelService", "geopera.v1.WorkerService", "grpc.health.v1.Health",
                        "grpc.reflection.v1alpha.ServerReflection"):  # fmt: skip
            assert service in output.splitlines()
        assert '"status": "SERVING"' in output
        assert "message ClipCreateFromItemParams" in output and "aoi_geometry" in output
    elif "WatchJob" in block:
        events = [json.loads(chunk) for chunk in _json_documents(output)]
        assert events[0]["event_type"] == "snapshot"
        assert events[-1]["job"]["status"] == "JOB_STATUS_SUCCEEDED", events[-1]
        assert events[-1]["job"]["output_item_ids"]
    else:
        response = json.loads(output)
        assert response["result"]["@type"].startswith("type.googleapis.com/geopera.v1.")
        if "collection_id" in block:
            assert [i["name"] for i in response["result"]["items"]] == [
                "s2l1c_slovenia_20150820_bgrn", "s2l1c_slovenia_20150830_bgrn"]  # fmt: skip
        elif "CreditsBalanceGetParams" in block:
            assert int(response["result"]["balance"]["available"]) <= 10000
        else:
            assert len(response["result"]["items"]) == 2 and response["result"]["next_page_token"]


def _json_documents(text: str) -> list[str]:
    """grpcurl prints one pretty JSON document per streamed message."""
    decoder = json.JSONDecoder()
    documents, index = [], 0
    while index < len(text):
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            break
        _, end = decoder.raw_decode(text, index)
        documents.append(text[index:end])
        index = end
    return documents
