"""`geopera jobs list|get|watch|cancel` as a user runs them: a real CLI process
against a real server (the seeded world), in human-readable and `--json`
form, with the exit statuses of `geopera download` (0 done, 1 refused or
unreachable, and for watch a job that did not succeed; 2 bad arguments).
Jobs come from analytics.submit (run by a real worker) and from
processing.create (a clip that stays PENDING, never dispatched)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from geopera.v1 import analytics_pb2, processing_pb2
from tests.conftest import SAMPLES, World
from tests.jobs_support import struct, wait_for_job_type, wait_terminal
from tests.sdk.proxy import Fault, FaultyProxy
from tests.support.server import REPO
from tests.support.workers import WorkerProcess

SCENE = "s2l1c_slovenia_20150711_bgrn"
AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())


def jobs(world: World, *args: str, token: str | None = "alpha", server: str | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
    if token is not None:
        clean["GEOPERA_TOKEN"] = world.tokens.get(token, token)
    return subprocess.run(
        [sys.executable, "-m", "geopera_kernel.server.cli", "jobs", *args, "--server", server or world.server.address],
        cwd=REPO, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], status: int = 1) -> str:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert result.stdout == ""
    return result.stderr


def analytics_job(world: World) -> str:
    params = {"item_id": world.items[SCENE], "index_name": "NDVI", "geometry": AOI}
    request = analytics_pb2.AnalyticsSubmitParams(operation="zonal_stats", params=struct(params), project_id="alpha")
    return world.client("alpha").execute("analytics.submit", request).job.id


def pending_clip(world: World, project: str = "alpha") -> str:
    items = world.items if project == "alpha" else world.beta_items
    request = processing_pb2.ProcessingCreateParams(
        project_id=project, job_type_id="clip",
        input_params=struct({"source_item_id": items[SCENE], "aoi_geometry": AOI}),
    )  # fmt: skip
    return world.client(project).execute("processing.create", request).job.id


@pytest.fixture(scope="module", autouse=True)
def worker(world: World) -> Any:
    """One worker for analytics jobs only: the clips stay where the tests leave them."""
    plugins = "geopera_kernel.worker.plugins.analytics"
    started = WorkerProcess(world.server.address, world.tokens["worker"], world.home, plugins=plugins).start()
    try:
        wait_for_job_type(world, "analytics")
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def finished(world: World) -> str:
    job_id = analytics_job(world)
    wait_terminal(world.client("alpha"), job_id)
    return job_id


def test_list_shows_the_projects_jobs_newest_first(world, finished):
    pending = pending_clip(world)
    lines = ok(jobs(world, "list", "--project", "alpha")).splitlines()
    assert lines[0].split() == ["ID", "TYPE", "STATUS", "PROGRESS", "CREATED", "MESSAGE"]
    assert lines[1].split()[:3] == [pending, "clip", "PENDING"]
    assert any(line.split()[:4] == [finished, "analytics", "SUCCEEDED", "100%"] for line in lines)
    listed = json.loads(ok(jobs(world, "list", "--project", "alpha", "--json", "--status", "succeeded")))
    assert finished in [job["id"] for job in listed["jobs"]]
    assert {job["status"] for job in listed["jobs"]} == {"succeeded"}  # as the HTTP API words it


def test_list_pages_with_a_token_and_all_follows_them(world, finished):
    pending_clip(world)
    first = jobs(world, "list", "--project", "alpha", "--limit", "1")
    assert len(ok(first).splitlines()) == 2 and "more: --page-token " in first.stderr
    token = first.stderr.split("--page-token ", 1)[1].split()[0]
    second = ok(jobs(world, "list", "--project", "alpha", "--limit", "1", "--page-token", token)).splitlines()
    assert second[1] != ok(first).splitlines()[1]
    every = json.loads(ok(jobs(world, "list", "--project", "alpha", "--limit", "1", "--all", "--json")))
    everything = json.loads(ok(jobs(world, "list", "--project", "alpha", "--limit", "1000", "--json")))
    assert [j["id"] for j in every["jobs"]] == [j["id"] for j in everything["jobs"]]
    assert every["next_page_token"] == ""


def test_get_shows_the_job_and_its_outputs(world, finished):
    text = ok(jobs(world, "get", finished))
    assert f"job        {finished}" in text and "status     SUCCEEDED" in text
    assert "credits    0 reserved, 0 charged" in text
    assert "artifact   artifacts/art_" in text and "result  application/json" in text
    body: dict[str, Any] = json.loads(ok(jobs(world, "get", finished, "--json")))
    assert body["id"] == finished and body["status"] == "succeeded" and body["job_type_id"] == "analytics"
    assert body["output_artifacts"][0]["key"] == "result"


def test_watch_follows_a_job_to_its_end(world):
    job_id = analytics_job(world)
    watched = jobs(world, "watch", job_id)
    assert ok(watched).splitlines()[-1].split()[3] == "SUCCEEDED"  # a snapshot if it ended already
    assert f"job {job_id} SUCCEEDED" in watched.stderr
    history = ok(jobs(world, "watch", job_id, "--after", "1")).splitlines()
    steps = [line.split()[2:4] for line in history]
    assert steps[0] == ["dispatched", "DISPATCHED"] and ["running", "RUNNING"] in steps, steps
    assert steps[-1] == ["succeeded", "SUCCEEDED"]
    events = [json.loads(line) for line in ok(jobs(world, "watch", job_id, "--json", "--after", "0")).splitlines()]
    assert events[-1]["job"]["status"] == "succeeded"
    assert [e["sequence"] for e in events] == sorted({e["sequence"] for e in events})


def test_cancel_then_watch_exits_1_for_a_job_that_did_not_succeed(world):
    job_id = pending_clip(world)
    text = ok(jobs(world, "cancel", job_id, "--reason", "not needed"))
    assert "status     CANCELLED" in text and "JOB_CANCELLED: cancelled: not needed" in text
    again = json.loads(ok(jobs(world, "cancel", job_id, "--json")))  # cancelling twice is fine
    assert again["status"] == "cancelled"
    watched = jobs(world, "watch", job_id)
    assert watched.returncode == 1 and watched.stdout.splitlines()[-1].split()[3] == "CANCELLED"


def test_watch_resumes_a_dropped_stream_without_repeating_an_event(world):
    job_id = pending_clip(world)
    with FaultyProxy(world.server.port) as proxy:
        # The first watch is cut once the server starts answering it.
        proxy.break_next_connection(Fault(after_request_containing=job_id.encode(), after_response_bytes=200))
        watch = subprocess.Popen(
            [sys.executable, "-m", "geopera_kernel.server.cli", "jobs", "watch", job_id, "--json",
             "--server", proxy.address, "--token", world.tokens["alpha"]],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            world.client("alpha").execute("processing.jobs.cancel",
                                          processing_pb2.ProcessingJobsCancelParams(job_id=job_id))  # fmt: skip
            out, err = watch.communicate(timeout=60)
        finally:
            watch.kill()
    assert watch.returncode == 1, err
    sequences = [json.loads(line)["sequence"] for line in out.splitlines()]
    assert sequences == sorted(set(sequences)) and json.loads(out.splitlines()[-1])["job"]["status"] == "cancelled"


@pytest.mark.parametrize(
    ("args", "token", "reason"),
    [
        (("get", "job_missing"), "alpha", "NOT_FOUND JOB_NOT_FOUND"),
        (("list", "--project", "beta"), "alpha", "PERMISSION_DENIED PROJECT_ACCESS_DENIED"),
        (("get", "job_missing"), None, "UNAUTHENTICATED"),
        (("cancel", "job_missing"), "gpk_nope", "UNAUTHENTICATED"),
    ],
)
def test_refusals_exit_1_with_the_reason(world, args, token, reason):
    assert reason in failed(jobs(world, *args, token=token))


def test_another_projects_job_and_a_missing_scope_are_refused(world):
    beta_job = pending_clip(world, "beta")
    assert "PERMISSION_DENIED" in failed(jobs(world, "get", beta_job))
    assert "PERMISSION_DENIED" in failed(jobs(world, "cancel", beta_job))
    reader = world.make_token(scopes=["processing:read"], projects=["alpha"])
    assert "MISSING_SCOPE" in failed(jobs(world, "cancel", pending_clip(world), token=reader))
    assert ok(jobs(world, "list", "--project", "alpha", token=reader))


def test_bad_arguments_exit_2_and_no_server_exits_1(world, tmp_path):
    assert "--project" in failed(jobs(world, "list"), 2)
    assert "--limit" in failed(jobs(world, "list", "--project", "alpha", "--limit", "0"), 2)
    assert "--ca-file" in failed(jobs(world, "get", "job_x", "--ca-file", str(tmp_path / "none.pem")), 2)
    assert "invalid choice" in failed(jobs(world, "list", "--project", "alpha", "--status", "done"), 2)
    nowhere = failed(jobs(world, "get", "job_x", server="127.0.0.1:1"))
    assert "UNAVAILABLE" in nowhere and "is a kernel serving 127.0.0.1:1?" in nowhere


def test_the_project_comes_from_the_environment(world, finished):
    listed = json.loads(ok(jobs(world, "list", "--json", env={"GEOPERA_PROJECT": "alpha"})))
    assert finished in [job["id"] for job in listed["jobs"]]


def test_help_names_every_subcommand_and_the_exit_statuses():
    shown = subprocess.run([sys.executable, "-m", "geopera_kernel.server.cli", "jobs", "--help"], cwd=REPO,
                           capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    for name in ("list", "get", "watch", "cancel"):
        assert name in shown
    assert "Exit status: 0 done" in shown
    assert Path(REPO / "src/server/jobs_cli/__init__.py").exists()


def test_resubmit_runs_a_finished_job_again_once_per_key_with_overrides(world):
    job_id = pending_clip(world)
    ok(jobs(world, "cancel", job_id))
    key = f"cli-{job_id}"
    first = json.loads(ok(jobs(world, "resubmit", job_id, "--set", "output_name=again", "--idempotency-key", key,
                                "--json")))  # fmt: skip
    assert first["id"] != job_id and first["resubmitted_from"] == job_id
    assert first["input_params"]["output_name"] == "again"
    assert first["credits_reserved"] and int(first["credits_reserved"]) > 0
    replay = json.loads(ok(jobs(world, "resubmit", job_id, "--set", "output_name=again", "--idempotency-key", key,
                                 "--json")))  # fmt: skip
    assert replay["id"] == first["id"]  # the same key spends once
    ok(jobs(world, "cancel", first["id"]))
    running = pending_clip(world)
    refused = failed(jobs(world, "resubmit", running))
    assert "JOB_NOT_FINISHED" in refused
    assert failed(jobs(world, "resubmit", job_id, "--set", "no-equals-sign"), status=2)
