"""README's "Scaling out" walk-through, run as printed on one machine: moto as the bucket, a
Dask scheduler with two workers, two server replicas and two job workers, each given both
replicas. Only the ports, the database (a fresh one of the test PostgreSQL) and the path of
`.venv/bin` are put in. Then, as a user would: an item registered through one replica,
zonal statistics through the other (on the Dask cluster, reading the bucket with /vsis3/: with
GEOPERA_DASK_SCHEDULER set the engine runs nowhere else, and an unreachable cluster fails),
and a clip job created on one replica, run by a worker, and followed on the other."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from geopera_sdk import Client

from tests.conftest import REPO, SAMPLES

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def walk_through() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### On one machine") :]
    return section[section.index("```bash\n") + len("```bash\n") : section.index("\n```", section.index("```bash"))]


def test_the_scaling_out_walk_through_runs_as_printed(database_url: str, tmp_path: Path) -> None:
    script = walk_through()
    assert script.startswith("createdb ")  # the reader makes a database; the test brings one
    script = script.split("\n", 1)[1]
    script = re.sub(r"GEOPERA_DATABASE_URL=\S+", f"GEOPERA_DATABASE_URL='{database_url}'", script)
    ports = {port: str(_free_port()) for port in ("9000", "8786", "50051", "50052", "8080", "8081")}
    script = re.sub(r"\b(9000|8786|50051|50052|8080|8081)\b", lambda match: ports[match.group(1)], script)
    script = script.replace(".venv/bin/", f"{BIN}/")
    log = (tmp_path / "walk.log").open("w")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "GEOPERA_"))}
    shell = subprocess.Popen(["bash", "-ec", script], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)  # fmt: skip
    try:
        assert shell.wait(timeout=180) == 0, (tmp_path / "walk.log").read_text()[-4000:]
        deadline = time.monotonic() + 90
        while (tmp_path / "walk.log").read_text().count("connected as") < 2:
            assert time.monotonic() < deadline, (tmp_path / "walk.log").read_text()[-4000:]
            time.sleep(0.5)
        output = (tmp_path / "walk.log").read_text()
        token = re.findall(r'"token": "(gpk_[^"]+)"', output)[0]  # alice's, as printed
        a, b = f"127.0.0.1:{ports['50051']}", f"127.0.0.1:{ports['50052']}"
        aoi = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
        with Client(b, token) as on_b:
            item = on_b.items.register_file("acme", "walk", SAMPLES / "s2l1c_slovenia_20150711_bgrn.tif")
        with Client(a, token) as on_a:
            stats = on_a.analytics.zonal_stats(item_id=item.id, index_name="NDVI", geometry=aoi)
            assert stats.result["zones"][0]["stats"]["count"] > 0
            job = on_a.clip(item.id, aoi)
        with Client(b, token) as on_b:
            done = on_b.jobs.get(job.id)
            done.wait(timeout=120)
            assert done.status_name == "SUCCEEDED", done
            assert len(done.output_item_ids) == 1
    finally:
        stop_group(shell.pid)


def stop_group(group: int) -> None:
    """Every process the script started (its session): SIGTERM, then SIGKILL after 30 s."""
    deadline, sent = time.monotonic() + 30, signal.SIGTERM
    while True:
        try:
            os.killpg(group, sent)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            sent = signal.SIGKILL
        time.sleep(0.5)
