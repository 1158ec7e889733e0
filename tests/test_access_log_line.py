"""The access log line written directly (`log_access`, one per call, bypassing the
logging module's per-record machinery) is the line `JsonFormatter` makes of the same
fields, field for field and in the same order, escaping included (the operation name
comes from the client). Inside an event loop, the lines of one turn go out in one write
at its end, in order, and before any other record or at a flush."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from geopera_kernel.raster import logs


@pytest.fixture
def stream(monkeypatch):
    saved = logging.root.handlers[:], logging.root.level, logs._AccessLines.handler, logs._AccessLines.formatter
    logs.configure_logging("INFO")
    out = io.StringIO()
    logging.root.handlers[0].setStream(out)

    def fallback(*args, **kwargs):
        raise AssertionError("log_access took the logging module's path, not its direct one")

    monkeypatch.setattr(logs._access, "info", fallback)
    try:
        yield out
    finally:
        logging.root.handlers[:], level, logs._AccessLines.handler, logs._AccessLines.formatter = saved
        logging.root.setLevel(level)


def _direct(fields: dict[str, object]) -> None:
    handler = logs._AccessLines.handler
    logging.root.handlers[:] = [handler]  # without pytest's capturing handlers: the direct path
    logs.log_access(fields)


def _formatted(fields: dict[str, object]) -> str:
    record = logging.makeLogRecord({"name": logs.ACCESS_LOGGER, "levelname": "INFO", "levelno": logging.INFO})
    record.access = fields
    assert logs._AccessLines.formatter is not None
    return logs._AccessLines.formatter.format(record)


def test_the_direct_line_is_the_formatters_line(stream):
    fields = {
        "rpc": "Execute",
        "operation": 'it"ems\\\u00e9\u2028.get\n',
        "principal": "tok_1",
        "code": "OK",
        "duration_ms": 0.123,
        "request_id": "req_1",
        "cache_hits": {"token": 1, "item": 1},
        "db_ms": float("nan"),
        "bytes": None,
        "ranges": [1, 2.5, "x"],
    }
    _direct(fields)
    (direct,) = stream.getvalue().splitlines()
    formatted = _formatted(fields)
    entry = json.loads(direct)
    assert list(entry)[:4] == ["ts", "level", "logger", "rpc"]
    assert entry["operation"] == fields["operation"] and entry["level"] == "INFO"
    assert len(entry["ts"]) == len("2026-01-01T00:00:00.000Z")
    # Byte for byte but the time stamp: the same encoder settings (ASCII, compact, NaN as NaN).
    assert direct.split('"level"', 1)[1] == formatted.split('"level"', 1)[1]


def test_a_value_json_cannot_encode_fails_loudly(stream):
    with pytest.raises(TypeError, match="not JSON serializable"):
        _direct({"rpc": "Execute", "odd": object()})


class _Writes(io.StringIO):
    """A stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def _line(n: int) -> dict[str, object]:
    return {"rpc": "Execute", "operation": "items.get", "code": "OK", "request_id": f"req_{n}"}


def _ids(text: str) -> list[str]:
    return [json.loads(raw).get("request_id") or json.loads(raw)["msg"] for raw in text.splitlines()]


def test_lines_of_one_loop_turn_go_out_in_one_write_in_order(stream):
    out = _Writes()
    logs._AccessLines.handler.setStream(out)

    async def calls() -> list[str]:
        for n in range(3):
            _direct(_line(n))
        seen = out.getvalue()  # nothing written yet: the turn is not over
        await asyncio.sleep(0)  # the end of the turn
        for n in range(3, 5):
            _direct(_line(n))
        await asyncio.sleep(0)
        return seen

    assert asyncio.run(calls()) == ""
    assert _ids(out.getvalue()) == [f"req_{n}" for n in range(5)]
    assert len(out.writes) == 2


def test_another_record_and_a_flush_write_the_waiting_lines_first(stream):
    out = _Writes()
    logs._AccessLines.handler.setStream(out)

    async def calls() -> None:
        _direct(_line(0))
        logging.getLogger("geopera.test").warning("after req_0")
        _direct(_line(1))
        logging.root.handlers[0].flush()  # as logging.shutdown() does at exit
        assert _ids(out.getvalue()) == ["req_0", "after req_0", "req_1"]
        _direct(_line(2))

    asyncio.run(calls())  # (the loop ends with req_2's write still scheduled: it runs as the loop closes)
    _direct(_line(3))  # no loop: written at once, after what was waiting
    assert _ids(out.getvalue()) == ["req_0", "after req_0", "req_1", "req_2", "req_3"]


def test_lines_left_by_a_loop_that_never_ran_its_write_come_out_before_later_ones(stream):
    out = _Writes()
    logs._AccessLines.handler.setStream(out)
    loop = asyncio.new_event_loop()

    async def one() -> None:
        _direct(_line(0))
        asyncio.get_running_loop().stop()  # before the turn that would write req_0

    loop.run_until_complete(one())
    loop.close()
    assert out.getvalue() == ""

    async def later() -> None:
        _direct(_line(1))
        await asyncio.sleep(0)

    asyncio.run(later())
    assert _ids(out.getvalue()) == ["req_0", "req_1"]
