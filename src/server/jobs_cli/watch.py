"""`geopera jobs watch JOB_ID`: the job's events as they happen (`WatchJob`),
until it ends. A dropped or idle-ended stream is resumed after the last event
seen, so no event is shown twice or missed. Exit status 0 when the job
SUCCEEDED, 1 when it FAILED or was CANCELLED (or the kernel refused)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from geopera_kernel.server.jobs_cli import show
from geopera_kernel.server.jobs_cli.kernel import Kernel, as_json
from geopera_kernel.server.remote import KernelRefused

# Waits before resuming a stream that failed UNAVAILABLE, in a row (reset by any event).
RESUME_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the job, job_...")
    parser.add_argument("--after", type=int, default=0,
                        help="show only events after this sequence number (default: a snapshot first)")  # fmt: skip


def line(event: object) -> str:
    from geopera.v1 import kernel_pb2

    assert isinstance(event, kernel_pb2.WatchJobResponse)
    job = event.job
    stamp = event.event_time.ToDatetime().strftime("%H:%M:%S")
    text = f"{stamp}  #{event.sequence:<4} {event.event_type:<16} {show.status_word(job):<10} {job.progress:>4.0%}"
    return f"{text}  {job.message}" if job.message else text


def run(kernel: Kernel, args: argparse.Namespace) -> int:
    import grpc

    from geopera.v1 import kernel_pb2

    after, failures, status = args.after, 0, ""
    while status not in TERMINAL:
        request = kernel_pb2.WatchJobRequest(job_id=args.job_id, after_sequence=after)
        stream = kernel.stub.WatchJob(request, metadata=kernel.metadata)
        try:
            for event in stream:
                after, failures = max(after, event.sequence), 0
                status = show.status_word(event.job)
                print(json.dumps(as_json(event), ensure_ascii=False) if args.json else line(event), flush=True)
        except grpc.RpcError as err:
            refused = KernelRefused.from_rpc(err)
            if refused.code != "UNAVAILABLE" or failures == len(RESUME_DELAYS):
                raise refused from None
            time.sleep(RESUME_DELAYS[failures])
            failures += 1
        finally:
            stream.cancel()
    if not args.json:
        print(f"job {args.job_id} {status}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1
