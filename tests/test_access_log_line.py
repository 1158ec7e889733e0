"""The access log line written directly (`log_access`, one per call, bypassing the
logging module's per-record machinery) is the line `JsonFormatter` makes of the same
fields, field for field and in the same order, escaping included (the operation name
comes from the client)."""

from __future__ import annotations

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
