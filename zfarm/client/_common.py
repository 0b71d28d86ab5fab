"""What the sync and async clients share that does no I/O: errors, request bodies, file names, parsing.

The I/O itself is written once, in `_async/client.py`; `_sync/client.py` is generated from it by
scripts/generate_sync_client.py (`make install`, `make test`) and by every package build (setup.py).
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

from zfarm.client.types import Job

FINAL = frozenset({"succeeded", "failed", "canceled", "dead"})
EXT = {"png": "png", "webp": "webp", "jpeg": "jpg"}
ARCHIVE_CHUNK = 1024 * 1024


class ZfarmError(RuntimeError):
    """The farm answered 4xx or 5xx; `detail` is its explanation (for a 422, a list naming field, value, rule)."""

    def __init__(self, status_code: int, detail: Any) -> None:
        self.status_code, self.detail = status_code, detail
        super().__init__(f"HTTP {status_code}: {describe(detail)}")


class JobFailed(RuntimeError):
    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job.get('id')} ended {job.get('status')}: {job.get('error')}")


class NoStream(Exception):
    """The server has no event stream for jobs (an older zfarm): fall back to polling."""


def describe(detail: Any) -> str:
    if isinstance(detail, dict) and "detail" in detail:
        detail = detail["detail"]
    if isinstance(detail, list):
        return "; ".join(d.get("message", str(d)) if isinstance(d, dict) else str(d) for d in detail)
    return str(detail)


def check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            detail = response.json()
        except ValueError:
            detail = response.text
        raise ZfarmError(response.status_code, detail)
    return response


def raise_for_stream(response: httpx.Response) -> None:
    if response.status_code == 429:  # the tenant's streams are at the farm's cap: poll instead
        raise NoStream
    if response.status_code == 404:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = None
        if detail == "Not Found":  # the framework's answer for an unknown route, not for an unknown job
            raise NoStream
    check(response)


def image_path(job_id: str, index: int, rendition: str | None = None) -> str:
    """The API's path of an image (`/v1/jobs/ID/images/0`) or of one of its renditions."""
    path = f"/v1/jobs/{job_id}/images/{index}"
    return f"{path}/renditions/{rendition}" if rendition else path


ASSET_ID = re.compile(r"[0-9a-f]{32}")
AssetRef = str | Path | dict[str, Any]  # an asset id, a file to upload, or an asset record


def asset_id_or_path(ref: AssetRef) -> str | Path:
    """An asset's id, or the image file to upload first. A 32-hex string names an asset unless such a file exists."""
    if isinstance(ref, dict):
        return str(ref["id"])
    if isinstance(ref, str) and ASSET_ID.fullmatch(ref) and not Path(ref).exists():
        return ref
    path = Path(ref)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(ref)!r} is neither an asset id nor a file")
    return path


def zipped_images(path: Path) -> tuple[str, bytes]:
    """A batch's `images` part: a zip file as it is, or a directory zipped here (names relative to it)."""
    if path.is_file():
        return path.name, path.read_bytes()
    if not path.is_dir():
        raise FileNotFoundError(f"images {str(path)!r} is neither a zip file nor a directory")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # images are compressed already
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            zf.write(file, file.relative_to(path).as_posix())
    return f"{path.name}.zip", buf.getvalue()


def job_body(prompt: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": prompt, **{k: v for k, v in params.items() if v is not None}}


def job_files(directory: Path, job: Job) -> list[tuple[Path, int, str | None]]:
    """(path, image index, rendition) of every file of a job: `ID_0.png`, and `ID_0_thumb.webp` per rendition."""
    files: list[tuple[Path, int, str | None]] = []
    for image in job.get("images", []):
        stem = f"{job['id']}_{image['index']}"
        files.append((directory / f"{stem}.{EXT[image['format']]}", image["index"], None))
        for r in image.get("renditions", []):
            files.append((directory / f"{stem}_{r['name']}.{EXT[r['format']]}", image["index"], r["name"]))
    return files


class EventParser:
    """Server-sent events, line by line (written here because the client depends on httpx only)."""

    def __init__(self) -> None:
        self.event: str = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, Job] | None:
        if line == "":
            event, data = self.event, self.data
            self.event, self.data = "message", []
            return (event, json.loads("\n".join(data))) if data else None
        if line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            self.data.append(line[5:].removeprefix(" "))
        return None  # comments (keep-alives), ids and retry hints need nothing here


def stream_timeout(deadline: float | None) -> httpx.Timeout:
    # The server sends a keep-alive every 10 s; reading no longer than the deadline keeps `timeout` honest.
    read = 30.0 if deadline is None else max(0.1, min(30.0, deadline - time.monotonic()))
    return httpx.Timeout(10.0, read=read)


def deadline_after(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def check_deadline(deadline: float | None, what: str, state: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError(f"{what} still {state} after the timeout")


def given(**options: Any) -> dict[str, Any]:
    """The fields that were given (None means: the farm's default)."""
    return {k: v for k, v in options.items() if v is not None}


def idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


def upload_parts(
    path: Path, file_format: str | None, options: dict[str, Any]
) -> tuple[dict[str, tuple[str, bytes]], dict[str, str]]:
    form = {
        k: json.dumps(v)
        if k in ("defaults", "renditions", "placement")
        else str(v).lower()
        if isinstance(v, bool)
        else str(v)
        for k, v in options.items()
    }
    if file_format:
        form["file_format"] = file_format
    return {"file": (path.name, path.read_bytes())}, form


def lora_parts(
    path: Path, name: str, trigger_words: str | None, default_scale: float | None, everyone: bool
) -> tuple[dict[str, tuple[str, bytes]], dict[str, str]]:
    """The multipart body of POST /v1/loras: the .safetensors file and its form fields."""
    form = {k: str(v) for k, v in given(name=name, trigger_words=trigger_words, default_scale=default_scale).items()}
    if everyone:
        form["everyone"] = "true"
    return {"file": (path.name, path.read_bytes())}, form


def extract(archive: Path, directory: Path) -> list[Path]:
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        zf.extractall(directory)  # names are built by the farm from keys; zipfile also refuses '..' and '/'
    return [directory / name for name in names]
