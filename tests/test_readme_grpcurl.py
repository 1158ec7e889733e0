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

SECTIONS = re.compile(
    r"^## (?:Talking to it with grpcurl|HTTP/JSON and the Python SDK)\n(.*?)(?=^## )", re.MULTILINE | re.DOTALL
)
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _sections() -> str:
    sections = SECTIONS.findall((REPO / "README.md").read_text())
    assert len(sections) == 2, "README.md lost its grpcurl or HTTP/SDK section"
    return "\n".join(sections)


def readme_grpcurl_blocks() -> list[str]:
    """Every bash block of the grpcurl and HTTP sections but the `export` one;
    each runs as one script, exactly as printed."""
    return [b for b in BASH_BLOCK.findall(_sections()) if not b.lstrip().startswith("export")]


def readme_python_blocks() -> list[str]:
    return PYTHON_BLOCK.findall(_sections())


@pytest.fixture(scope="module")
def demo_server(database_factory, tmp_path_factory):
    home = tmp_path_factory.mktemp("demo")
    server = ServerProcess(database_url=database_factory.create(), home=home, extra_args=["--demo"]).start()
    yield server
    server.stop()


def _run(
    command: str, server: ServerProcess, token: str, interpreter: str = "bash"
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOKEN": token, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    script = command.replace("127.0.0.1:50051", server.address).replace(
        "127.0.0.1:8080", f"127.0.0.1:{server.http_port}"
    )
    argv = ["bash", "-c", script] if interpreter == "bash" else [str(REPO / ".venv" / "bin" / "python"), "-c", script]
    return subprocess.run(
        argv,
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
    # A lean listing (ITEM_VIEW_BASIC): no densified footprints or band statistics.
    assert all("geometry" not in item and "properties" not in item for item in response["result"]["items"])
    assert all("bands" not in asset for item in response["result"]["items"] for asset in item["assets"].values())
    full = subprocess.run(
        ["bash", "-c", printed[0].replace('"project_id": "demo"', '"project_id": "demo", "view": "ITEM_VIEW_FULL"')],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert full.returncode == 0, full.stderr
    print(f"quickstart listing: {len(result.stdout)} bytes (basic), {len(full.stdout)} bytes (full)")
    assert len(result.stdout) * 10 < len(full.stdout) and len(result.stdout) < 12_000


def test_readme_has_the_commands_we_promise():
    text = "\n".join(readme_grpcurl_blocks())
    assert "grpcurl -plaintext 127.0.0.1:50051 list" in text
    assert "describe geopera.v1.ClipCreateFromItemParams" in text
    assert text.count("KernelService/Execute") >= 4 and "KernelService/WatchJob" in text
    assert "buf curl" in text and "curl -s -X POST http://127.0.0.1:8080/v1/op/" in text
    assert readme_python_blocks()


@pytest.mark.parametrize("index", range(len(readme_python_blocks())))
def test_readme_python_snippet(demo_server, index):
    token = Path(demo_server.home / "demo-token").read_text().strip()
    result = _run(readme_python_blocks()[index], demo_server, token, interpreter="python")
    assert result.returncode == 0, result.stderr
    stats, status = result.stdout.splitlines()[:2]
    mean, pixels_read = stats.split()
    assert 0.3 < float(mean) < 1.0
    assert pixels_read.isdigit()  # the model's integer, not the Struct's 2021.0
    assert status.startswith("SUCCEEDED ['it_")


@pytest.mark.parametrize("index", range(len(readme_grpcurl_blocks())))
def test_readme_grpcurl_block(demo_server, index):
    block = readme_grpcurl_blocks()[index]
    token = Path(demo_server.home / "demo-token").read_text().strip()
    result = _run(block, demo_server, token)
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
        # The proto comments are the contract: reflection serves them, field by field.
        assert "// Area of interest: GeoJSON (RFC 7946, lon/lat) Polygon, MultiPolygon, or a" in output
        assert "// Assets to clip; empty means every raster asset of the source." in output
    elif "buf curl" in block:
        assert json.loads(output)["result"]["@type"] == "type.googleapis.com/geopera.v1.ProjectsListResult"
    elif "zonal_stats" in block:
        zones = json.loads(output)["result"]["result"]["zones"]
        assert 0.3 < zones[0]["stats"]["mean"] < 1.0
    elif "processing.jobs.list" in block:
        assert output == "clip succeeded\n"
    elif "curl -s" in block:
        created = json.loads(output)
        assert created["job"]["job_type_id"] == "bathymetry" and created["dispatch"]["accepted"]
        assert created["job"]["status"] == "dispatched"  # the product docs' word
    elif '"validate_only": true' in block:
        # Priced, not bought: the job as it would be (no id) and its estimate.
        result = json.loads(output)["result"]
        assert result["@type"] == "type.googleapis.com/geopera.v1.ClipCreateFromItemResult"
        assert "id" not in result["job"] and int(result["estimate"]["total_credits"]) >= 1
        assert int(result["estimate"]["balance_after"]) == int(result["estimate"]["available_credits"]) - int(
            result["estimate"]["total_credits"]
        )
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
