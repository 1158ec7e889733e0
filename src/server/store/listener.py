"""One LISTEN connection per server process.

It hands every notification, as its channel and raw payload, to one callback
(the job service's Notifications decode and fan them out), and says when it
(re)connected: notifications sent while it was away are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import psycopg

log = logging.getLogger(__name__)


class Listener:
    def __init__(
        self,
        url: str,
        channels: Sequence[str],
        deliver: Callable[[str, str], None],
        connected: Callable[[], None],
    ) -> None:
        self._url = url
        self._channels = tuple(channels)
        self._deliver = deliver
        self._on_connect = connected
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listener")
        await asyncio.wait_for(self._connected.wait(), timeout=30)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                    for channel in self._channels:
                        await conn.execute(f"LISTEN {channel}")
                    self._connected.set()
                    self._on_connect()
                    delay = 0.5
                    async for note in conn.notifies():
                        self._deliver(note.channel, note.payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notification listener lost its connection; reconnecting in %.1f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
