"""A header read timeout for uvicorn's HTTP protocols.

uvicorn times out a keep-alive connection only while it is idle *between*
requests; once a client has sent the first byte of a request it may take
for ever to finish the headers (Slowloris: half a header line every few
seconds), and each such socket holds a file descriptor and a protocol
object. Neither the h11 nor the httptools protocol has an option for it,
so :func:`protocol_with_header_timeout` subclasses the one uvicorn would
use: a timer starts when a connection opens, and again when the first byte
of each next request arrives, and closes the connection if the request's
headers are not complete ``timeout_s`` later. Both protocols create a new
request cycle (``self.cycle``) exactly when a request's headers are
complete, which is what the timer waits for. Slow *bodies* are left alone:
the body-size guard bounds them and a slow upload is legitimate.
"""

from __future__ import annotations

import asyncio
from typing import Any

_UNSET = object()


def protocol_with_header_timeout(http: Any, timeout_s: float) -> type:
    """uvicorn's HTTP protocol class (``"auto"``, ``"h11"``, ``"httptools"`` or a class)."""
    base = _resolve(http)

    class HeaderTimeoutProtocol(base):  # type: ignore[misc, valid-type]
        header_timeout_s = timeout_s

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self._ts_timer: asyncio.TimerHandle | None = None
            self._ts_marker: Any = _UNSET
            super().connection_made(transport)
            self._ts_arm()  # a connection that never sends a byte is closed too

        def data_received(self, data: bytes) -> None:
            if self._ts_timer is None and self._ts_between_requests():
                self._ts_arm()
            super().data_received(data)
            if self._ts_timer is not None and getattr(self, "cycle", None) is not self._ts_marker:
                self._ts_disarm()  # headers complete: a new request cycle exists

        def connection_lost(self, exc: Exception | None) -> None:
            self._ts_disarm()
            super().connection_lost(exc)

        def _ts_between_requests(self) -> bool:
            cycle = getattr(self, "cycle", None)
            return cycle is None or bool(getattr(cycle, "response_complete", False))

        def _ts_arm(self) -> None:
            self._ts_marker = getattr(self, "cycle", None)
            loop = asyncio.get_running_loop()
            self._ts_timer = loop.call_later(self.header_timeout_s, self._ts_expired)

        def _ts_disarm(self) -> None:
            if self._ts_timer is not None:
                self._ts_timer.cancel()
                self._ts_timer = None

        def _ts_expired(self) -> None:
            self._ts_timer = None
            if getattr(self, "cycle", None) is self._ts_marker:
                transport = getattr(self, "transport", None)
                if transport is not None and not transport.is_closing():
                    transport.close()

    HeaderTimeoutProtocol.__name__ = f"HeaderTimeout{base.__name__}"
    return HeaderTimeoutProtocol


def _resolve(http: Any) -> type:
    if isinstance(http, type):
        return http
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    target = HTTP_PROTOCOLS.get(http, http)
    cls = import_from_string(target) if isinstance(target, str) else target
    assert isinstance(cls, type)
    return cls
