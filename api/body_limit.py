"""Refuses request bodies over the size limit with 413, before the app parses them.

The body is read up to the limit and handed on in one piece: parsers never see a cut body, and a
chunked body (no Content-Length) or one that lies about its length is counted, not trusted.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_json_bytes: int,
        max_upload_bytes: int,
        upload_paths: tuple[str, ...] = (),
        large_paths: dict[str, int] | None = None,
    ) -> None:
        self.app, self.max_json, self.max_upload = app, max_json_bytes, max_upload_bytes
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
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
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
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail": "request body is over the limit of {limit} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
