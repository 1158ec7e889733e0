"""A project's storage-quota check (every RegisterOutputs commit that adds outputs, items.create, an
upload) locks the project row until its transaction ends. That lock must not stop
the project's job creation: `INSERT INTO jobs` checks its foreign key to the project
row with a KEY SHARE lock, which a `FOR UPDATE` lock blocks and `FOR NO KEY UPDATE`
does not. The jobs bench found creations of a project queued behind its output
commits this way (pg_stat_activity: Lock:tuple / Lock:transactionid waits)."""

from __future__ import annotations

import psycopg

from geopera.v1 import processing_pb2, resources_pb2
from geopera_kernel.server.store import Q
from tests.jobs_support import running_world, struct, wait_terminal

# A job of alpha's that writes no output.
NOOP = processing_pb2.ProcessingCreateAndDispatchParams(
    project_id="alpha", job_type_id="test_noop", input_params=struct({})
)


def test_job_creation_does_not_wait_for_a_quota_check_in_progress(database_factory, tmp_path):
    with running_world(database_factory.create(), tmp_path, workers=1) as world:
        client = world.client("alpha")
        with psycopg.connect(world.database_url) as holder:
            # What a RegisterOutputs of project alpha holds until it commits.
            holder.execute(Q.lock_project_quota, {"project_id": "alpha"})
            created = client.execute("processing.create_and_dispatch", NOOP, timeout=10)
            assert created.job.id
            holder.rollback()
        # The quota checks still serialise among themselves: the job then completes.
        assert wait_terminal(client, created.job.id).status == resources_pb2.JobStatus.JOB_STATUS_SUCCEEDED


def test_a_job_without_outputs_completes_while_a_quota_check_is_in_progress(database_factory, tmp_path):
    """A commit that adds no byte cannot take the project over its quota: it
    takes no quota lock, so it does not queue behind the project's storage writes."""
    with running_world(database_factory.create(), tmp_path, workers=1) as world:
        client = world.client("alpha")
        with psycopg.connect(world.database_url) as holder:
            holder.execute(Q.lock_project_quota, {"project_id": "alpha"})
            created = client.execute("processing.create_and_dispatch", NOOP, timeout=10)
            job = wait_terminal(client, created.job.id, timeout=30)
            assert job.status == resources_pb2.JobStatus.JOB_STATUS_SUCCEEDED
            holder.rollback()
