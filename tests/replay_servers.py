"""Local servers that replay recorded upstream traffic to the real source clients.

- :class:`HttpReplayServer`: a threaded ``http.server`` on 127.0.0.1 (a free
  port) whose routes are plain functions of the request; they can answer
  whole bodies or stream chunked responses and drop the connection midway.
- :func:`websocket_replay`: a ``websockets`` server on 127.0.0.1 running a
  handler coroutine per connection, recording each request's path.

Both record the requests they saw, so tests can check what the client asked.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve

from townsquare.model import Batch
from townsquare.sources.base import Source


@dataclass
class Seen:
    """One request as the server saw it."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


class Reply:
    """What a route handler uses to answer (wraps the request handler)."""

    def __init__(self, handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        self._h = handler
        self.stop = stop

    def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self._h.send_response(status)
        for name, value in (headers or {}).items():
            self._h.send_header(name, value)
        self._h.send_header("Content-Length", str(len(body)))
        self._h.end_headers()
        if body:
            self._h.wfile.write(body)

    def start_chunked(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._h.send_response(status)
        for name, value in (headers or {}).items():
            self._h.send_header(name, value)
        self._h.send_header("Transfer-Encoding", "chunked")
        self._h.end_headers()

    def chunk(self, data: bytes) -> None:
        """One HTTP chunk, flushed at once (raises if the client went away)."""
        self._h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self._h.wfile.flush()

    def end_chunked(self) -> None:
        self._h.wfile.write(b"0\r\n\r\n")
        self._h.wfile.flush()

    def drop(self) -> None:
        """Cut the TCP connection mid-response, as a crashing upstream would."""
        self._h.close_connection = True
        self._h.wfile.flush()
        self._h.connection.shutdown(socket.SHUT_RDWR)


Route = Callable[[Seen, Reply], None]


class HttpReplayServer:
    """``with HttpReplayServer({"/feed": route}) as srv: srv.url("/feed")``."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.seen: list[Seen] = []
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                seen = Seen(parts.path, parse_qs(parts.query), dict(self.headers.items()))
                server.seen.append(seen)
                route = server.routes.get(parts.path)
                reply = Reply(self, server.stop)
                if route is None:
                    reply.send(404, b"not found")
                    return
                try:
                    route(seen, reply)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def __enter__(self) -> HttpReplayServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@dataclass
class WsReplay:
    """A running websocket server: its URL and the request paths it saw."""

    port: int
    paths: list[str] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def queries(self) -> list[dict[str, list[str]]]:
        return [parse_qs(urlsplit(p).query) for p in self.paths]


@asynccontextmanager
async def websocket_replay(
    handler: Callable[[ServerConnection, int], Awaitable[None]],
) -> AsyncIterator[WsReplay]:
    """Serve ``handler(connection, n)`` (``n``: 0 for the first connection, ...)."""
    state = WsReplay(port=0)

    async def on_connect(ws: ServerConnection) -> None:
        n = len(state.paths)
        state.paths.append(ws.request.path if ws.request else "")
        await handler(ws, n)

    async with serve(on_connect, "127.0.0.1", 0) as server:
        sock = next(iter(server.sockets))
        state.port = sock.getsockname()[1]
        yield state
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


@asynccontextmanager
async def open_stream(
    source: Source, cursor: str | None = None
) -> AsyncIterator[AsyncIterator[Batch]]:
    """``source.stream(cursor)``, closed on exit (its ``finally`` blocks run, sockets close)."""
    stream = source.stream(cursor)
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def take_batches(
    stream: AsyncIterator[Batch], until: Callable[[list[Batch]], bool], timeout: float = 30.0
) -> list[Batch]:
    """Read batches from a source's stream until ``until(batches)`` holds.

    ``timeout`` only stops a broken test from hanging; it is not a timing claim.
    """
    got: list[Batch] = []

    async def run() -> None:
        async for batch in stream:
            got.append(batch)
            if until(got):
                return

    await asyncio.wait_for(run(), timeout)
    return got
