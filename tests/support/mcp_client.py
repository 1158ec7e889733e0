"""A test-side MCP client: `geopera mcp` spawned over stdio, driven with the
`mcp` client library from a background event loop; and a small HTTP helper."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp_types import RequestParamsMeta

from tests.support.server import REPO

if TYPE_CHECKING:
    from tests.conftest import World


def _geopera_command() -> list[str]:
    script = Path(sys.executable).parent / "geopera"
    return [str(script)] if script.exists() else [sys.executable, "-m", "geopera_kernel.server.cli"]


class McpClient:
    """`geopera mcp` as a subprocess with one MCP client session, driven from
    synchronous tests: the session lives in its own thread and event loop (the
    contexts of `stdio_client` and `ClientSession` enter and exit in one task)."""

    def __init__(self, server_address: str, token: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._ready: concurrent.futures.Future[ClientSession] = concurrent.futures.Future()
        self._stop: asyncio.Event | None = None
        command = _geopera_command()
        params = StdioServerParameters(
            command=command[0],
            args=[*command[1:], "mcp", "--server", server_address],
            env={"GEOPERA_TOKEN": token, **(env or {})},  # the token from the environment, as an MCP host passes it
            cwd=str(REPO),
        )
        self.log_path = log_path
        self._main = asyncio.run_coroutine_threadsafe(self._serve(params), self._loop)
        self.session = self._ready.result(timeout=60)

    async def _serve(self, params: StdioServerParameters) -> None:
        self._stop = asyncio.Event()
        try:
            with self.log_path.open("a") as errlog:
                async with stdio_client(params, errlog=errlog) as (read, write):
                    async with ClientSession(read, write, read_timeout_seconds=90) as session:
                        await session.initialize()
                        self._ready.set_result(session)
                        await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def run(self, call: Callable[[ClientSession], Coroutine[Any, Any, Any]], timeout: float = 90) -> Any:
        return asyncio.run_coroutine_threadsafe(call(self.session), self._loop).result(timeout)

    def tools(self) -> dict[str, Any]:
        return {tool.name: tool for tool in self.run(lambda s: s.list_tools()).tools}

    def call(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        progress: list | None = None,
        meta: RequestParamsMeta | None = None,
    ) -> Any:
        seen = progress

        # The parameter names are mcp's ProgressFnT protocol's.
        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            if seen is not None:
                seen.append((progress, message))

        return self.run(lambda s: s.call_tool(name, arguments or {}, progress_callback=on_progress, meta=meta))

    def ok(self, name: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """The structured result of a call that must succeed (its text block is the same JSON)."""
        result = self.call(name, arguments, **kwargs)
        assert not result.is_error, result.structured_content
        assert json.loads(result.content[0].text) == result.structured_content
        return result.structured_content

    def error(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        result = self.call(name, arguments)
        assert result.is_error, result.structured_content
        assert json.loads(result.content[0].text) == result.structured_content
        return result.structured_content

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        try:
            self._main.result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


def http_post(
    world: World, operation: str, body: dict[str, Any], *, token: str = "alpha", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """`POST /v1/op/{operation}` on the HTTP projection: (status, JSON body)."""
    request = urllib.request.Request(
        f"{world.server.http_url}/v1/op/{operation}", data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {world.tokens.get(token, token)}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
