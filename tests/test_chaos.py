"""A bounded `make chaos` run in `make test`: the server, a worker and
PostgreSQL are killed while jobs and analytics run, then every invariant of
`bench/chaos.py` is checked (the full run is `make chaos`)."""

from __future__ import annotations

import pytest

from bench.chaos import INVARIANTS, Plan, run_chaos


@pytest.mark.timeout(600)
def test_kills_during_jobs_and_analytics_break_no_invariant():
    # Its own temporary folder, not pytest's: PostgreSQL runs as another user
    # and pytest keeps its base folder private.
    plan = Plan(server_kills=2, worker_kills=1, pg_restarts=1, min_pause=1.5, max_pause=3.0, seed=7)
    report = run_chaos(plan)
    assert report.faults.done == {"server": 2, "worker": 1, "postgres": 1}
    # The run did real work on both sides of the faults.
    assert report.checks["figures"]["jobs"]["SUCCEEDED"] > 0
    assert report.tally.codes[("clip.create_from_item", "OK")] > 0
    broken = {name: report.checks["violations"][name] for name in INVARIANTS if report.checks["violations"].get(name)}
    assert not broken, report.markdown()
