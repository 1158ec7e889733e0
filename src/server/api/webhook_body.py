"""A webhook message's JSON body (Standard Webhooks' `type` / `timestamp` /
`data` envelope), the job in it as the HTTP projection answers it."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from geopera_kernel.server.api import convert, jsonview
from geopera_kernel.server.domain.jobs import JobRecord


def webhook_body(row: dict[str, Any]) -> dict[str, Any]:
    """From a claimed outbox row (webhooks.sql claim_webhook_messages). The
    same row always gives the same bytes, so every retry sends the same body."""
    when = row["event_time"].astimezone(UTC).isoformat().replace("+00:00", "Z")
    if row["event_type"].startswith("job."):
        snapshot = {**row["snapshot"], "input_params": {}}  # (event snapshots leave them out)
        job = jsonview.to_json(convert.job(JobRecord.from_json(snapshot), full=False))
        data: dict[str, Any] = {"job": job}
    else:  # webhook.test
        data = {"webhook_id": row["webhook_id"], "message": "test message sent by webhooks.test"}
    return {"type": row["event_type"], "timestamp": when, "data": data}
