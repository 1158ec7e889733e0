"""A real TCP proxy in front of a real server that breaks one connection on
purpose: it resets the connection after letting a request through but before
its response reaches the client (the server did the work, the client sees
UNAVAILABLE), or after a number of response bytes (a download cut midway).
Later connections pass through untouched. Nothing about the server is faked."""

from __future__ import annotations

import select
import socket
import struct
import threading
from dataclasses import dataclass


@dataclass
class Fault:
    """How to break the next connection."""

    # Reset once this byte string has gone upstream and the server starts
    # answering (an HTTP/2 HEADERS frame comes back).
    after_request_containing: bytes | None = None
    # Reset after this many bytes came back from the server.
    after_response_bytes: int | None = None


class _FrameScanner:
    """Splits server->client bytes into HTTP/2 frames (the server's preface is a
    plain SETTINGS frame, so frames start at byte 0)."""

    def __init__(self) -> None:
        self.buffer = b""

    def frames(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """(type, stream id, raw bytes) of each complete frame."""
        self.buffer += data
        out = []
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                break
            frame_type = self.buffer[3]
            stream_id = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
            out.append((frame_type, stream_id, self.buffer[: 9 + length]))
            self.buffer = self.buffer[9 + length :]
        return out


HEADERS = 0x1


class FaultyProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.connections = 0
        self.resets = 0
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def break_next_connection(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                fault = self._faults.pop(0) if self._faults else None
            thread = threading.Thread(target=self._pump, args=(client, fault), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _reset(self, client: socket.socket) -> None:
        # SO_LINGER 0: close sends RST, like a crashed peer or a broken network.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._lock:
            self.resets += 1

    def _pump(self, client: socket.socket, fault: Fault | None) -> None:
        upstream = socket.create_connection(self.upstream)
        scanner = _FrameScanner()
        seen_upstream = b""
        armed = False
        returned = 0
        try:
            while not self._closed.is_set():
                readable, _, _ = select.select([client, upstream], [], [], 0.2)
                for sock in readable:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    if sock is client:
                        if fault is not None and fault.after_request_containing and not armed:
                            seen_upstream = (seen_upstream + data)[-(len(data) + 4096) :]
                            armed = fault.after_request_containing in seen_upstream
                        upstream.sendall(data)
                        continue
                    if fault is None:
                        client.sendall(data)
                    elif fault.after_response_bytes is not None:
                        room = fault.after_response_bytes - returned
                        client.sendall(data[: max(0, room)])
                        returned += len(data)
                        if returned >= fault.after_response_bytes:
                            self._reset(client)
                            return
                    else:
                        for frame_type, stream_id, raw in scanner.frames(data):
                            if armed and frame_type == HEADERS and stream_id != 0:
                                self._reset(client)  # the response is dropped
                                return
                            client.sendall(raw)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()
