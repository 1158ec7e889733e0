"""`geopera jobs get JOB_ID`: one job (`processing.jobs.get`)."""

from __future__ import annotations

import argparse

from geopera_kernel.server.jobs_cli import show
from geopera_kernel.server.jobs_cli.kernel import Kernel


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the job, job_...")


def run(kernel: Kernel, args: argparse.Namespace) -> int:
    from geopera.v1 import processing_pb2

    params = processing_pb2.ProcessingJobsGetParams(job_id=args.job_id)
    job = kernel.execute("processing.jobs.get", params, processing_pb2.ProcessingJobsGetResult()).job
    show.print_job(job, args.json)
    return 0
