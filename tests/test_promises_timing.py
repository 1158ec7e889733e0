"""README promises about time, held with short settings (issue 17): the retry
backoff doubles per attempt up to its cap, and an idempotency key expires.
Bounds are generous: these tests check behaviour, not speed."""

from __future__ import annotations

import secrets
import threading
import time

import psycopg
import pytest

from geopera.v1 import processing_pb2
from tests.conftest import TEST_SERVER_ENV, World, seed_world
from tests.jobs_support import STATUS, balance, create_and_dispatch, start_workers, struct, watch
from tests.support.server import ServerProcess

BASE, CAP, ATTEMPTS, KEY_TTL = 2.0, 4.0, 4, 3.0
SETTINGS = {
    "GEOPERA_RETRY_BACKOFF_SECONDS": str(BASE),
    "GEOPERA_RETRY_BACKOFF_MAX_SECONDS": str(CAP),
    "GEOPERA_MAX_ATTEMPTS": str(ATTEMPTS),
    "GEOPERA_IDEMPOTENCY_KEY_TTL": f"{KEY_TTL:g}s",
}


@pytest.fixture(scope="module")
def timing_world(database_factory, tmp_path_factory):
    import asyncio

    home = tmp_path_factory.mktemp("timing")
    url = database_factory.create()
    server = ServerProcess(database_url=url, home=home, extra_env={**SETTINGS, **TEST_SERVER_ENV}).start()
    world = World(server=server, database_url=url, home=home)
    workers = []
    try:
        asyncio.run(seed_world(world))
        world.channel = server.channel()
        workers = start_workers(world, 1)
        yield world
    finally:
        for worker in workers:
            worker.stop()
        if world.channel is not None:
            world.channel.close()
        server.stop()


def _seconds(timestamp) -> float:
    return timestamp.seconds + timestamp.nanos / 1e9


def test_the_retry_backoff_doubles_per_attempt_up_to_its_cap(timing_world):
    client = timing_world.client("alpha")
    job = create_and_dispatch(client, "test_fail", {"retryable": True}).job
    # The backoff the server chose for each retry, read from the job row while
    # it waits (requeued: available_time = now() + backoff, update_time = now()).
    chosen: dict[int, float] = {}
    stop = threading.Event()

    def record_backoffs() -> None:
        with psycopg.connect(timing_world.database_url, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT attempt, extract(epoch FROM available_time - update_time)::float8 FROM jobs "
                    "WHERE id = %s AND status = 'DISPATCHED' AND worker_id IS NULL AND attempt > 0",
                    (job.id,),
                ).fetchone()
                if row is not None and row[1] > 0:
                    chosen.setdefault(row[0], row[1])
                time.sleep(0.05)

    recorder = threading.Thread(target=record_backoffs, daemon=True)
    recorder.start()
    try:
        events = watch(client, job.id, after=1, timeout=120)
    finally:
        stop.set()
        recorder.join()
    final = events[-1].job
    assert final.status == STATUS.JOB_STATUS_FAILED and final.attempt == ATTEMPTS

    # Uncapped doubling would be 2, 4, 8 s; the cap holds the third at 4 s. Each
    # is jittered +-20 %.
    expected = [min(CAP, BASE * 2**k) for k in range(ATTEMPTS - 1)]
    assert expected == [2.0, 4.0, 4.0]
    assert sorted(chosen) == [1, 2, 3], chosen
    for attempt, backoff in zip(sorted(chosen), expected, strict=True):
        assert 0.8 * backoff - 0.01 <= chosen[attempt] <= 1.2 * backoff + 0.01, chosen

    # The same gaps seen from the job's events: from each `retrying` to the
    # next assignment, never shorter than the backoff, and not much longer.
    gaps = []
    for index, event in enumerate(events):
        if event.event_type == "retrying":
            assigned = next(e for e in events[index + 1 :] if e.event_type == "assigned")
            gaps.append(_seconds(assigned.event_time) - _seconds(event.event_time))
    assert len(gaps) == ATTEMPTS - 1
    for gap, attempt in zip(gaps, sorted(chosen), strict=True):
        assert chosen[attempt] - 0.05 <= gap <= chosen[attempt] + 3.0, (gaps, chosen)
    assert gaps[2] < 0.8 * 8  # capped: the uncapped third wait would be at least 6.4 s


def _create(client, key: str, note: str = ""):
    params = processing_pb2.ProcessingCreateParams(
        project_id="alpha", job_type_id="test_noop", input_params=struct({"note": note})
    )
    return client.execute("processing.create", params, idempotency_key=key).job


def test_an_idempotency_key_replays_until_it_expires_then_is_new_work(timing_world):
    client = timing_world.client("alpha")
    key = f"expiring-{secrets.token_hex(4)}"
    before = balance(client)
    first = _create(client, key)
    with psycopg.connect(timing_world.database_url) as conn:
        (lifetime,) = conn.execute(
            "SELECT extract(epoch FROM expire_time - create_time)::float8 FROM idempotency_keys WHERE key = %s", (key,)
        ).fetchone()
    assert lifetime == pytest.approx(KEY_TTL, abs=0.01)
    assert _create(client, key).id == first.id  # replayed while it lives
    assert balance(client).held == before.held + 1
    time.sleep(KEY_TTL + 0.5)
    # Expired: the same request is new work (a second job), and so is another one.
    second = _create(client, key)
    assert second.id != first.id
    third_key = f"expiring-{secrets.token_hex(4)}"
    third = _create(client, third_key, note="a")
    time.sleep(KEY_TTL + 0.5)
    other = _create(client, third_key, note="b")  # other params: no IDEMPOTENCY_KEY_REUSED once expired
    assert other.id != third.id
    for job in (first, second, third, other):
        client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id))
    assert balance(client) == before
