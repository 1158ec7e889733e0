"""A real webhook receiver on loopback (http.server in a thread): records every
request and answers the statuses it is told to, in order (then 200)."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    time: float  # time.time() when it arrived

    @property
    def json(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


class Receiver:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.received: list[Received] = []
        self.statuses: deque[int] = deque()
        self.redirect_to = ""
        # Before answering, wait this long; answer a body of this many bytes.
        self.delay_seconds = 0.0
        self.body_bytes = 2
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._arrived:
                    receiver.received.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body, time.time())
                    )
                    status = receiver.statuses.popleft() if receiver.statuses else 200
                    receiver._arrived.notify_all()
                time.sleep(receiver.delay_seconds)
                try:
                    self.send_response(status)
                    if 300 <= status < 400:
                        self.send_header("Location", receiver.redirect_to)
                    self.send_header("Content-Length", str(receiver.body_bytes))
                    self.end_headers()
                    for start in range(0, receiver.body_bytes, 1 << 16):
                        self.wfile.write(b"x" * min(1 << 16, receiver.body_bytes - start))
                except OSError:  # the sender hung up (a timeout, or no more reading)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = str(self._server.server_address[0]), self._server.server_address[1]
        return f"http://{host}:{port}/hook"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """The first `count` requests, once they arrived."""
        with self._arrived:
            ok = self._arrived.wait_for(lambda: len(self.received) >= count, timeout)
            assert ok, f"{len(self.received)} webhook requests arrived, expected {count}"
            return list(self.received)


def verified(secret: str, received: Received) -> dict[str, Any]:
    """The payload, verified by the standardwebhooks package (raises when the signature is wrong)."""
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload
