"""`geopera jobs list`: a project's jobs, newest first (`processing.jobs.list`)."""

from __future__ import annotations

import argparse
import os
import sys

from geopera_kernel.server.jobs_cli import show
from geopera_kernel.server.jobs_cli.kernel import Kernel, UsageError, as_json

STATUSES = ("pending", "dispatched", "running", "succeeded", "failed", "cancelled")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", default=os.environ.get("GEOPERA_PROJECT"),
                        help="project id [GEOPERA_PROJECT]")  # fmt: skip
    parser.add_argument("--status", choices=STATUSES, help="only jobs in this status")
    parser.add_argument("--type", dest="job_type_id", default="", help="only jobs of this job type")
    parser.add_argument("--limit", type=int, default=50, help="jobs per page, 1..1000 (default 50)")
    parser.add_argument("--page-token", default="", help="the next page, as the previous page printed it")
    parser.add_argument("--all", action="store_true", help="every page, not just the first")


def run(kernel: Kernel, args: argparse.Namespace) -> int:
    from geopera.v1 import processing_pb2, resources_pb2

    if not args.project:
        raise UsageError("--project (or GEOPERA_PROJECT) is required")
    if not 1 <= args.limit <= 1000:
        raise UsageError("--limit takes 1..1000")
    status = resources_pb2.JobStatus.Value(f"JOB_STATUS_{(args.status or 'unspecified').upper()}")
    token = args.page_token
    jobs, pages = [], []
    while True:
        params = processing_pb2.ProcessingJobsListParams(project_id=args.project, status=status,
                                                         job_type_id=args.job_type_id, page_size=args.limit,
                                                         page_token=token)  # fmt: skip
        page = kernel.execute("processing.jobs.list", params, processing_pb2.ProcessingJobsListResult())
        jobs += list(page.jobs)
        pages.append(page)
        token = page.next_page_token
        if not (args.all and token):
            break
    if args.json:
        import json

        body = {"jobs": [as_json(job) for job in jobs], "next_page_token": token}
        print(json.dumps(body, indent=2, ensure_ascii=False))
        return 0
    if jobs:
        print("\n".join(show.table(jobs)))
    else:
        print("no jobs", file=sys.stderr)
    if token:
        print(f"more: --page-token {token}", file=sys.stderr)
    return 0
