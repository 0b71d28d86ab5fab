"""Refuses request bodies over the size limit with 413, and bodies that arrive too slowly with 408, before the
app parses them.

The body is read up to the limit and handed on in one piece: parsers never see a cut body, and a
chunked body (no Content-Length) or one that lies about its length is counted, not trusted. The whole body
must arrive within `body_timeout` seconds: a client that trickles it would otherwise hold the connection (and
the buffer) forever. A body streamed through to its route (a LoRA file) keeps the same deadline: past it the
route sees the client as gone, and the client gets 408.
"""

from __future__ import annotations

import json

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_json_bytes: int,
        max_upload_bytes: int,
        upload_paths: tuple[str, ...] = (),
        large_paths: dict[str, int] | None = None,
        body_timeout: float = 120.0,
    ) -> None:
        self.app, self.max_json, self.max_upload = app, max_json_bytes, max_upload_bytes
        self.body_timeout = body_timeout
        self.upload_paths = upload_paths
        # Paths with their own, larger limit (LoRA files: hundreds of MiB). A body that declares its length
        # within it streams through unbuffered (the server holds the client to that length); the route counts too.
        self.large_paths = large_paths or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        is_upload = headers.get(b"content-type", b"").startswith(b"multipart/") or scope["path"] in self.upload_paths
        limit = self.large_paths.get(scope["path"]) or (self.max_upload if is_upload else self.max_json)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        if scope["path"] in self.large_paths and declared is not None and declared.isdigit():
            await self._stream_through(scope, receive, send)
            return
        chunks: list[bytes] = []
        with anyio.move_on_after(self.body_timeout) as deadline:
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > limit:
                    await _too_large(send, limit)
                    return
                if not message.get("more_body", False):
                    break
        if deadline.cancelled_caught:
            await _too_slow(send, self.body_timeout)
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _stream_through(self, scope: Scope, receive: Receive, send: Send) -> None:
        ends = anyio.current_time() + self.body_timeout
        timed_out = answered = False

        async def receive_by_deadline() -> Message:
            nonlocal timed_out
            with anyio.move_on_after(max(0.0, ends - anyio.current_time())):
                return await receive()
            timed_out = True
            return {"type": "http.disconnect"}  # the route stops reading, as for a client that left

        async def send_unless_answered(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                if timed_out:
                    await _too_slow(send, self.body_timeout)
            if not timed_out:
                await send(message)

        await self.app(scope, receive_by_deadline, send_unless_answered)
        if timed_out and not answered:
            await _too_slow(send, self.body_timeout)


async def _too_large(send: Send, limit: int) -> None:
    await _refuse(send, 413, f"request body is over the limit of {limit} bytes")


async def _too_slow(send: Send, seconds: float) -> None:
    await _refuse(send, 408, f"request body did not arrive within {seconds:g} seconds")


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 408:
        headers.append((b"connection", b"close"))  # the rest of the body may still come: never read it
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
