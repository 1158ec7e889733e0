"""`geopera jobs logs JOB_ID`: a job's log records (`processing.jobs.logs`), oldest first,
one line each: `time LEVEL [attempt N] message {fields}` (`--json`: the JobLogEntry as a
JSON object per line). `--min-level warning` keeps WARNING and worse. `--follow` prints
the records so far, then the new ones as the worker writes them (`WatchJob` with
`include_logs`, resumed after a dropped stream) until the job ends, and the job's end on
stderr.

Exit status: 0 done (with `--follow`: the job SUCCEEDED or was CANCELLED); 1 the kernel
refused or could not be reached, or the followed job FAILED; 2 a bad command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from geopera_kernel.server.jobs_cli.kernel import Kernel
from geopera_kernel.server.remote import KernelRefused

if TYPE_CHECKING:
    from geopera.v1 import resources_pb2

LEVELS = ("debug", "info", "warning", "error", "critical")
RESUME_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
JSON_HELP = "one JSON object (a JobLogEntry) per line"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the job (job_...)")
    parser.add_argument("--min-level", choices=LEVELS, help="only records of this level and worse")
    parser.add_argument("--follow", "-f", action="store_true", help="then print new records until the job ends")


def line(entry: resources_pb2.JobLogEntry, as_json: bool) -> str:
    from google.protobuf import json_format

    from geopera.v1 import resources_pb2

    if as_json:
        return json.dumps(json_format.MessageToDict(entry, preserving_proto_field_name=True), separators=(",", ":"))
    when = entry.log_time.ToDatetime().isoformat(timespec="milliseconds") + "Z"
    level = resources_pb2.LogLevel.Name(entry.level).removeprefix("LOG_LEVEL_")
    # A Struct's numbers are doubles: whole ones print as integers (`"index":3`).
    fields = {k: int(v) if isinstance(v, float) and v.is_integer() else v
              for k, v in json_format.MessageToDict(entry.fields).items() if k != "logger"}  # fmt: skip
    text = f"{when} {level:<8} [attempt {entry.attempt}] {entry.message}"
    return f"{text} {json.dumps(fields, separators=(',', ':'), sort_keys=True)}" if fields else text


def pages(kernel: Kernel, job_id: str, min_level: int) -> Iterator[resources_pb2.JobLogEntry]:
    from geopera.v1 import processing_pb2

    token = ""
    while True:
        params = processing_pb2.ProcessingJobsLogsParams(
            job_id=job_id,
            min_level=min_level,  # type: ignore[arg-type]  # a LogLevel number
            page_size=1000,
            page_token=token,
        )
        page = kernel.execute("processing.jobs.logs", params, processing_pb2.ProcessingJobsLogsResult(), timeout=30)
        yield from page.entries
        token = page.next_page_token
        if not token:
            return


def follow(kernel: Kernel, job_id: str, min_level: int, after_log: int, out: Any, as_json: bool) -> resources_pb2.Job:
    """Print the records after `after_log` until the job ends; the final job."""
    import grpc

    from geopera.v1 import kernel_pb2, resources_pb2

    after_event, resumes = 0, 0
    terminal = {resources_pb2.JOB_STATUS_SUCCEEDED, resources_pb2.JOB_STATUS_FAILED, resources_pb2.JOB_STATUS_CANCELLED}
    latest = resources_pb2.Job(id=job_id)
    while True:
        request = kernel_pb2.WatchJobRequest(
            job_id=job_id,
            after_sequence=after_event,
            include_logs=True,
            after_log_sequence=after_log,
            min_log_level=min_level,  # type: ignore[arg-type]  # a LogLevel number
        )
        try:
            for event in kernel.stub.WatchJob(request, metadata=kernel.metadata):
                if event.HasField("log_entry"):
                    after_log = max(after_log, event.log_entry.sequence)
                    print(line(event.log_entry, as_json), file=out, flush=True)
                    continue
                after_event, latest = event.sequence, event.job
                if latest.status in terminal:
                    return latest
            if latest.status in terminal or after_event:
                return latest  # ended OK with nothing newer: the job had ended
        except grpc.RpcError as err:
            failure = KernelRefused.from_rpc(err)
            if failure.code != "UNAVAILABLE" or resumes >= len(RESUME_DELAYS):
                raise failure from None
            time.sleep(RESUME_DELAYS[resumes])
            resumes += 1


def run(kernel: Kernel, args: argparse.Namespace) -> int:
    from geopera.v1 import resources_pb2

    min_level = LEVELS.index(args.min_level) + 1 if args.min_level else 0
    last = 0
    for entry in pages(kernel, args.job_id, min_level):
        print(line(entry, args.json), flush=True)
        last = entry.sequence
    if not args.follow:
        return 0
    job = follow(kernel, args.job_id, min_level, last, sys.stdout, args.json)
    status = resources_pb2.JobStatus.Name(job.status).removeprefix("JOB_STATUS_")
    error = f": {job.error.message}" if job.error.message else ""
    print(f"job {job.id} {status}{error}", file=sys.stderr)
    return 1 if job.status == resources_pb2.JOB_STATUS_FAILED else 0
