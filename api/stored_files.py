"""Answering with a stored file: sendfile from local disk, a chunked stream from the bucket, or a 307 to a
short-lived link into the bucket (ZFARM_PRESIGNED_URLS=true). A missing file is a 404 that says which."""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from core.storage import Storage, StorageError, read_chunks
from models.records import Presign


def stored_response(
    storage: Storage,
    key: str,
    media_type: str,
    headers: dict[str, str],
    size: int,
    what: str,
    presign: Presign | None = None,
) -> Response:
    """`what` names the file for a 404 (`job ID image 0`): the row says it exists, the store has lost it."""
    missing = HTTPException(404, detail=f"{what}: its bytes are missing from storage (key {key})")
    try:
        if presign is not None:
            # Checked before redirecting: a client is told here that the bytes are gone, not by the bucket.
            if not storage.exists(key):
                raise missing
            if (url := presign(key)) is not None:
                return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
        path = storage.path(key)
        if path is not None:
            if not path.is_file():
                raise missing
            return FileResponse(path, media_type=media_type, headers=headers)
        body = storage.open(key)
    except FileNotFoundError as exc:
        raise missing from exc
    except StorageError as exc:
        raise HTTPException(503, detail=f"{what}: storage did not answer: {exc}") from exc
    # Passed through a chunk at a time: memory per download stays one chunk, whatever the image's size.
    return StreamingResponse(read_chunks(body), media_type=media_type, headers={**headers, "Content-Length": str(size)})
