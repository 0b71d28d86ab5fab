"""Where image bytes live. Keys are built by the server from job id and index, never from user input."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

_KEY = re.compile(r"^[a-z0-9][a-z0-9/_.-]*$")
S3_URL = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>[A-Za-z0-9!_.*'()/-]*))?$")
CHUNK = 256 * 1024  # what the API streams per read: memory per download stays this, whatever the file's size


class StorageError(OSError):
    """The store refused or failed a call after its retries; the message names the store, the key and why.

    An OSError, as a full disk is: whoever handles a failed local write handles a failed bucket write too."""


class StorageUnavailable(StorageError):
    """The store does not answer at start: the process stops with this line (the URL and the reason)."""


def check_key(key: str) -> str:
    """Only keys made by the functions above reach a store: a key a user typed can never name a file."""
    if not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise ValueError(f"storage key {key!r} is not a server-built key")
    return key


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix/"); the rule is S3's bucket naming rule."""
    match = S3_URL.fullmatch(url)
    if match is None:
        raise ValueError(
            f"storage_url must be s3://BUCKET or s3://BUCKET/PREFIX with a bucket name of 3-63 lowercase letters, "
            f"digits, dots and hyphens (got {url!r})"
        )
    prefix = (match["prefix"] or "").strip("/")
    if ".." in prefix.split("/"):
        raise ValueError(f"storage_url prefix must not contain '..' (got {url!r})")
    return match["bucket"], f"{prefix}/" if prefix else ""


def read_chunks(fh: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    """A stored file read a chunk at a time (a bucket's streaming body or a local file), closed at the end."""
    try:
        while chunk := fh.read(size):
            yield chunk
    finally:
        fh.close()


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
    """Every read and write of images, renditions, input images and adapter files goes through these calls.

    `open` raises FileNotFoundError for a missing key and StorageError when the store fails; `path` is the
    local file when there is one (served with sendfile), else None; `url` is a short-lived link a client
    fetches from the store itself, or None where the store has none (local disk).
    """

    url_text: str

    def put(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, source: Path) -> None: ...
    def open(self, key: str) -> BinaryIO: ...
    def exists(self, key: str) -> bool: ...
    def path(self, key: str) -> Path | None: ...
    def delete(self, key: str) -> None: ...
    def url(self, key: str, seconds: int) -> str | None: ...
    def check(self) -> None: ...


class LocalStorage:
    """A directory on local disk (or a shared mount); core/s3_storage.py is the same calls against a bucket."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url_text = str(self.root)

    def _file(self, key: str) -> Path:
        return self.root / check_key(key)

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

    def put_file(self, key: str, source: Path) -> None:
        target = self._file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
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

    def url(self, key: str, seconds: int) -> str | None:
        return None  # a local file has no link of its own: the API serves it

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"storage {self.root} cannot be created: {exc.strerror or exc}") from exc
