"""Batch calls of the Python client (mixed into `Client` and `AsyncClient`). httpx and the standard library only."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

Batch = dict[str, Any]
BatchProgressFn = Callable[[Batch], None]
ARCHIVE_CHUNK = 1024 * 1024


def check(response: httpx.Response) -> httpx.Response:
    from zfarm.client import _check

    return _check(response)


def batch_options(**options: Any) -> dict[str, Any]:
    """The batch fields that were given (None means: the farm's default)."""
    return {k: v for k, v in options.items() if v is not None}


def idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


def upload_parts(path: Path, file_format: str | None, options: dict[str, Any]) -> tuple[dict, dict[str, str]]:
    form = {
        k: json.dumps(v) if k in ("defaults", "renditions") else str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in options.items()
    }
    if file_format:
        form["file_format"] = file_format
    return {"file": (path.name, path.read_bytes())}, form


def extract(archive: Path, directory: Path) -> list[Path]:
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        zf.extractall(directory)  # names are built by the farm from keys; zipfile also refuses '..' and '/'
    return [directory / name for name in names]


class BatchCalls:
    http: httpx.Client

    def create_batch(self, rows: list[dict[str, Any]], *, idempotency_key: str | None = None, **options: Any) -> Batch:
        """A batch from rows in memory: template=..., key_column="sku", defaults={...}, preset=..., seed=..."""
        body = {"rows": rows, **batch_options(**options)}
        return check(self.http.post("/v1/batches", json=body, headers=idempotency(idempotency_key))).json()

    def upload_batch(
        self, path: str | Path, *, file_format: str | None = None, idempotency_key: str | None = None, **options: Any
    ) -> Batch:
        """A batch from a CSV or JSONL file (the same options as create_batch)."""
        files, form = upload_parts(Path(path), file_format, batch_options(**options))
        return check(self.http.post("/v1/batches", files=files, data=form, headers=idempotency(idempotency_key))).json()

    def get_batch(self, batch_id: str) -> Batch:
        return check(self.http.get(f"/v1/batches/{batch_id}")).json()

    def batches(self, limit: int = 20) -> list[Batch]:
        return check(self.http.get("/v1/batches", params={"limit": limit})).json()["batches"]

    def cancel_batch(self, batch_id: str) -> Batch:
        return check(self.http.delete(f"/v1/batches/{batch_id}")).json()

    def retry_failed(self, batch_id: str) -> int:
        return check(self.http.post(f"/v1/batches/{batch_id}/retry-failed")).json()["requeued"]

    def wait_batch(
        self,
        batch_id: str,
        *,
        timeout: float | None = None,
        poll: float = 1.0,
        on_update: BatchProgressFn | None = None,
    ) -> Batch:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = self.get_batch(batch_id)
            if on_update:
                on_update(batch)
            if batch["status"] != "active":
                return batch
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} still active after {timeout}s ({batch['done']}/{batch['rows']})")
            time.sleep(poll)

    def manifest(self, batch_id: str) -> str:
        return check(self.http.get(f"/v1/batches/{batch_id}/manifest.csv")).text

    def download_archive(self, batch_id: str, path: str | Path) -> Path:
        """Streams archive.zip to a file (never held in memory)."""
        target = Path(path)
        with self.http.stream("GET", f"/v1/batches/{batch_id}/archive.zip") as response:
            if response.status_code >= 400:
                response.read()
                check(response)
            with target.open("wb") as fh:
                for chunk in response.iter_bytes(ARCHIVE_CHUNK):
                    fh.write(chunk)
        return target

    def download_batch(self, batch_id: str, directory: str | Path) -> list[Path]:
        """The images (named by key) and manifest.csv into a directory."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            return extract(self.download_archive(batch_id, Path(tmp) / "archive.zip"), out)

    def presets(self) -> list[dict[str, Any]]:
        return check(self.http.get("/v1/presets")).json()["presets"]

    def templates(self) -> list[dict[str, Any]]:
        return check(self.http.get("/v1/templates")).json()["templates"]

    def save_template(self, name: str, **fields: Any) -> dict[str, Any]:
        """template="..." or parts={"subject": ..., "lighting": ...}; negative_prompt, preset."""
        return check(self.http.post("/v1/templates", json={"name": name, **batch_options(**fields)})).json()


class AsyncBatchCalls:
    http: httpx.AsyncClient

    async def create_batch(
        self, rows: list[dict[str, Any]], *, idempotency_key: str | None = None, **options: Any
    ) -> Batch:
        body = {"rows": rows, **batch_options(**options)}
        return check(await self.http.post("/v1/batches", json=body, headers=idempotency(idempotency_key))).json()

    async def upload_batch(
        self, path: str | Path, *, file_format: str | None = None, idempotency_key: str | None = None, **options: Any
    ) -> Batch:
        files, form = upload_parts(Path(path), file_format, batch_options(**options))
        return check(
            await self.http.post("/v1/batches", files=files, data=form, headers=idempotency(idempotency_key))
        ).json()

    async def get_batch(self, batch_id: str) -> Batch:
        return check(await self.http.get(f"/v1/batches/{batch_id}")).json()

    async def batches(self, limit: int = 20) -> list[Batch]:
        return check(await self.http.get("/v1/batches", params={"limit": limit})).json()["batches"]

    async def cancel_batch(self, batch_id: str) -> Batch:
        return check(await self.http.delete(f"/v1/batches/{batch_id}")).json()

    async def retry_failed(self, batch_id: str) -> int:
        return check(await self.http.post(f"/v1/batches/{batch_id}/retry-failed")).json()["requeued"]

    async def wait_batch(
        self,
        batch_id: str,
        *,
        timeout: float | None = None,
        poll: float = 1.0,
        on_update: BatchProgressFn | None = None,
    ) -> Batch:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = await self.get_batch(batch_id)
            if on_update:
                on_update(batch)
            if batch["status"] != "active":
                return batch
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} still active after {timeout}s ({batch['done']}/{batch['rows']})")
            await asyncio.sleep(poll)

    async def manifest(self, batch_id: str) -> str:
        return check(await self.http.get(f"/v1/batches/{batch_id}/manifest.csv")).text

    async def download_archive(self, batch_id: str, path: str | Path) -> Path:
        target = Path(path)
        async with self.http.stream("GET", f"/v1/batches/{batch_id}/archive.zip") as response:
            if response.status_code >= 400:
                await response.aread()
                check(response)
            with target.open("wb") as fh:
                async for chunk in response.aiter_bytes(ARCHIVE_CHUNK):
                    fh.write(chunk)
        return target

    async def download_batch(self, batch_id: str, directory: str | Path) -> list[Path]:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            return extract(await self.download_archive(batch_id, Path(tmp) / "archive.zip"), out)

    async def presets(self) -> list[dict[str, Any]]:
        return check(await self.http.get("/v1/presets")).json()["presets"]

    async def templates(self) -> list[dict[str, Any]]:
        return check(await self.http.get("/v1/templates")).json()["templates"]

    async def save_template(self, name: str, **fields: Any) -> dict[str, Any]:
        return check(await self.http.post("/v1/templates", json={"name": name, **batch_options(**fields)})).json()
