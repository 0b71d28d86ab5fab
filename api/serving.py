"""Serving the API with uvicorn, with deadlines for slow clients.

uvicorn closes an idle keep-alive connection (`timeout_keep_alive`) and caps a request head's size (h11's
incomplete-event limit), but a connection that sends its request head slowly, or nothing at all, is held
forever: any byte cancels the keep-alive timer. `HeadDeadlineH11Protocol` gives each request head a deadline
from the moment the connection opens (or the previous answer ends); past it the client gets 408 and the
connection is closed. A body that arrives too slowly is cut by api/body_limit.py, the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from core.settings import FarmSettings

MAX_HEAD_BYTES = 16 * 1024  # request line and headers (uvicorn's default, stated here): larger answers 400
_TIMED_OUT_BODY = b"the request head did not arrive in time\n"
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\nconnection: close\r\n"
    + b"content-length: %d\r\n\r\n" % len(_TIMED_OUT_BODY)
    + _TIMED_OUT_BODY
)


class HeadDeadlineH11Protocol(H11Protocol):
    head_timeout: float = 10.0  # set per server by head_deadline_protocol()
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in: the body has its own deadline
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request's head, on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.transport.write(_TIMED_OUT)
            self.transport.close()


def head_deadline_protocol(seconds: float) -> type[HeadDeadlineH11Protocol]:
    return type("HeadDeadlineH11Protocol", (HeadDeadlineH11Protocol,), {"head_timeout": seconds})


def server_config(app: Any, settings: FarmSettings, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "host": settings.api_host,
        "port": settings.api_port,
        "log_level": "info",
        "http": head_deadline_protocol(settings.request_head_timeout_seconds),
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        **overrides,
    }
    return uvicorn.Config(app, **options)


def serve(app: Any, settings: FarmSettings) -> None:
    uvicorn.Server(server_config(app, settings)).run()
