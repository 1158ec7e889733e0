"""`geopera jobs cancel JOB_ID`: cancel a job (`processing.jobs.cancel`); its held credits are released."""

from __future__ import annotations

import argparse

from geopera_kernel.server.jobs_cli import show
from geopera_kernel.server.jobs_cli.kernel import Kernel


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the job, job_...")
    parser.add_argument("--reason", default="", help="why (kept in the job's message)")


def run(kernel: Kernel, args: argparse.Namespace) -> int:
    from geopera.v1 import processing_pb2

    params = processing_pb2.ProcessingJobsCancelParams(job_id=args.job_id, reason=args.reason)
    job = kernel.execute("processing.jobs.cancel", params, processing_pb2.ProcessingJobsCancelResult()).job
    show.print_job(job, args.json)
    return 0
