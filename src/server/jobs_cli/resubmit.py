"""`geopera jobs resubmit JOB_ID [--set KEY=JSON ...]`: run a finished job again
(`processing.jobs.resubmit`): a new job of the same type and inputs, with a new
credit hold, linked to the original; `--set` overrides input params."""

from __future__ import annotations

import argparse
import json
import uuid

from geopera_kernel.server.jobs_cli import show
from geopera_kernel.server.jobs_cli.kernel import Kernel


def _override(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value  # a bare word is a string


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the finished job to run again, job_...")
    parser.add_argument(
        "--set", dest="overrides", action="append", type=_override, default=[], metavar="KEY=VALUE",
        help="override an input param (VALUE as JSON, else a string; null removes it); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--idempotency-key",
        default="",
        help="the spend's idempotency key: the same key runs the resubmit once (default: a new one per call)",
    )


def run(kernel: Kernel, args: argparse.Namespace) -> int:
    from geopera.v1 import processing_pb2

    params = processing_pb2.ProcessingJobsResubmitParams(job_id=args.job_id)
    if args.overrides:
        params.input_params.update(dict(args.overrides))
    key = args.idempotency_key or f"cli-resubmit-{uuid.uuid4().hex}"
    result = kernel.execute(
        "processing.jobs.resubmit", params, processing_pb2.ProcessingJobsResubmitResult(), idempotency_key=key
    )
    show.print_job(result.job, args.json)
    return 0
