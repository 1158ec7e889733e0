"""A job for a terminal: one line per job (list) and a block per job (get, cancel, resubmit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geopera.v1 import resources_pb2


def status_word(job: resources_pb2.Job) -> str:
    from geopera.v1 import resources_pb2

    return resources_pb2.JobStatus.Name(job.status).removeprefix("JOB_STATUS_")


def when(job: resources_pb2.Job, field: str) -> str:
    if not job.HasField(field):  # type: ignore[arg-type]
        return "-"
    return getattr(job, field).ToDatetime().strftime("%Y-%m-%d %H:%M:%S") + "Z"


def table(jobs: list[resources_pb2.Job]) -> list[str]:
    """Columns sized to their widest value; the message cut to keep a line short."""
    rows = [("ID", "TYPE", "STATUS", "PROGRESS", "CREATED", "MESSAGE")]
    for job in jobs:
        message = job.message if len(job.message) <= 60 else job.message[:59] + "…"
        rows.append((job.id, job.job_type_id, status_word(job), f"{job.progress:.0%}", when(job, "create_time"),
                     message))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
            for row in rows]  # fmt: skip


def block(job: resources_pb2.Job) -> list[str]:
    lines = [
        f"job        {job.id}",
        f"project    {job.project_id}",
        f"type       {job.job_type_id}",
        f"status     {status_word(job)}" + (" (cancel requested)" if job.cancel_requested else ""),
        f"progress   {job.progress:.0%}",
        f"attempt    {job.attempt} of {job.max_attempts}" + (f" on {job.worker_id}" if job.worker_id else ""),
        f"credits    {job.credits_reserved} reserved, {job.credits_charged} charged",
        f"created    {when(job, 'create_time')}",
        f"started    {when(job, 'start_time')}",
        f"ended      {when(job, 'end_time')}",
        f"message    {job.message}",
    ]
    if job.HasField("error") and job.error.code:
        reason = error_reason(job)
        lines.append(f"error      {reason}: {job.error.message}" if reason else f"error      {job.error.message}")
    lines += [f"source     {item_id}" for item_id in job.source_item_ids]
    lines += [f"output     items/{item_id}" for item_id in job.output_item_ids]
    lines += [f"artifact   {a.href}  {a.key}  {a.media_type}  {a.size_bytes} bytes" for a in job.output_artifacts]
    return lines


def error_reason(job: resources_pb2.Job) -> str:
    """The ErrorInfo reason of the job's error, if it carries one."""
    from google.rpc import error_details_pb2

    for detail in job.error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def print_job(job: resources_pb2.Job, as_json: bool) -> None:
    """A job as get, cancel and resubmit print it: a block, or the JSON the HTTP API answers."""
    from geopera_kernel.server.jobs_cli.kernel import print_json

    if as_json:
        print_json(job)
    else:
        print("\n".join(block(job)))
