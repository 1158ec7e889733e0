"""The worker's per-job capture of `logging` records (geopera_kernel.worker.job_logs),
in-process: jobs running at once in their own tasks and plugin threads never mix
records, the handler leaves the root logger when the last job ends, and a full
buffer keeps the newest records and says how many it dropped."""

from __future__ import annotations

import asyncio
import logging

from geopera.v1 import resources_pb2
from geopera_kernel.worker.job_logs import JobLogBuffer, capturing

plugin_log = logging.getLogger("tests.capture")


def _plugin(name: str, lines: int) -> None:
    for index in range(lines):
        plugin_log.warning("%s %d", name, index, extra={"job": name, "index": index})


async def _job(name: str, buffer: JobLogBuffer, lines: int) -> None:
    with capturing(buffer):
        plugin_log.warning("%s starts", name)  # the job's task
        await asyncio.to_thread(_plugin, name, lines)  # the plugin's thread


def test_concurrent_jobs_keep_their_own_records_in_order():
    buffers = {name: JobLogBuffer() for name in ("a", "b", "c")}
    handlers_before = list(logging.getLogger().handlers)

    async def main() -> None:
        await asyncio.gather(*(_job(name, buffer, 200) for name, buffer in buffers.items()))

    asyncio.run(main())
    plugin_log.warning("outside any job")  # reaches no buffer
    for name, buffer in buffers.items():
        records = buffer.take(1000)
        assert [r.message for r in records] == [f"{name} starts"] + [f"{name} {i}" for i in range(200)]
        assert all(r.fields["job"] == name for r in records[1:])
        assert [r.fields["index"] for r in records[1:]] == list(range(200))
        assert records[0].fields["logger"] == "tests.capture"
        assert all(r.level == resources_pb2.LOG_LEVEL_WARNING for r in records)
        assert buffer.take(10) == []
    assert logging.getLogger().handlers == handlers_before


def test_a_full_buffer_keeps_the_newest_and_counts_the_dropped():
    buffer = JobLogBuffer(max_records=5)

    async def main() -> None:
        await _job("x", buffer, 20)

    asyncio.run(main())
    batch = buffer.take(100)
    assert [r.message for r in batch[:5]] == [f"x {i}" for i in range(15, 20)]
    assert batch[5].message == "16 log records dropped by the worker (buffer full)"
    assert batch[5].fields["dropped_records"] == 16


def test_exceptions_keep_their_traceback_and_odd_extras_their_repr():
    buffer = JobLogBuffer()

    def crash() -> None:
        try:
            raise ValueError("bad tile")
        except ValueError:
            plugin_log.exception("failed", extra={"shape": object(), "nan": float("nan")})

    async def main() -> None:
        with capturing(buffer):
            await asyncio.to_thread(crash)

    asyncio.run(main())
    [record] = buffer.take(10)
    assert record.level == resources_pb2.LOG_LEVEL_ERROR
    assert record.message.startswith("failed\nTraceback") and "ValueError: bad tile" in record.message
    assert record.fields["shape"].startswith("<object object") and record.fields["nan"] == "nan"
