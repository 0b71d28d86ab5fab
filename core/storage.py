"""Where image bytes live. Keys are built by the server from job id and index, never from user input."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

_KEY = re.compile(r"^[a-z0-9][a-z0-9/_.-]*$")


def image_key(job_id: str, index: int, fmt: str, rendition: str = "") -> str:
    """The one place keys are made: a rerun of the same job writes the same key (overwrite, never duplicate).

    `rendition` is "" for the rendered image and a rendition's validated name otherwise: `0.png`, `0-thumb.webp`.
    """
    if not re.fullmatch(r"[0-9a-f]{32}", job_id):
        raise ValueError(f"job_id must be 32 lowercase hex characters (got {job_id!r})")
    if index < 0:
        raise ValueError(f"index must be >= 0 (got {index})")
    if rendition and not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", rendition):
        raise ValueError(f"rendition must be a rendition name (got {rendition!r})")
    ext = {"png": "png", "webp": "webp", "jpeg": "jpg"}[fmt]
    stem = f"{index}-{rendition}" if rendition else str(index)
    return f"jobs/{job_id[:2]}/{job_id}/{stem}.{ext}"


def lora_key(sha256: str) -> str:
    """A LoRA adapter file, named by its content: the same file uploaded twice (or by two tenants) is stored once."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex characters (got {sha256!r})")
    return f"loras/{sha256[:2]}/{sha256}.safetensors"


def asset_key(asset_id: str) -> str:
    """An uploaded input image, stored normalized as PNG: the key comes from the asset id, never the file name."""
    if not re.fullmatch(r"[0-9a-f]{32}", asset_id):
        raise ValueError(f"asset_id must be 32 lowercase hex characters (got {asset_id!r})")
    return f"assets/{asset_id[:2]}/{asset_id}.png"


class Storage(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def open(self, key: str) -> BinaryIO: ...
    def exists(self, key: str) -> bool: ...
    def path(self, key: str) -> Path | None: ...
    def delete(self, key: str) -> None: ...


class LocalStorage:
    """A directory on local disk (or a shared mount). An S3-compatible store implements the same five calls."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _file(self, key: str) -> Path:
        if not _KEY.fullmatch(key) or ".." in key.split("/"):
            raise ValueError(f"storage key {key!r} is not a server-built key")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        target = self._file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half an image, and a rerun replaces the file atomically.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def open(self, key: str) -> BinaryIO:
        return self._file(key).open("rb")

    def exists(self, key: str) -> bool:
        return self._file(key).is_file()

    def path(self, key: str) -> Path | None:
        return self._file(key)

    def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)
