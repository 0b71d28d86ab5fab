"""The zfarm client's one source. The sync client (`zfarm/client/_sync/client.py`, not kept in git) is
generated from this file by scripts/generate_sync_client.py (`make client`) and by package builds.
httpx and the standard library only.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx

from zfarm.client._common import (
    ARCHIVE_CHUNK,
    FINAL,
    AssetRef,
    EventParser,
    JobFailed,
    NoStream,
    asset_id_or_path,
    check,
    check_deadline,
    deadline_after,
    extract,
    given,
    idempotency,
    image_path,
    job_body,
    job_files,
    lora_parts,
    raise_for_stream,
    stream_timeout,
    upload_parts,
    zipped_images,
)
from zfarm.client.types import JSON, Asset, Batch, BatchCreated, Job, Lora, Worker

JobProgressFn = Callable[[Job], None]
BatchProgressFn = Callable[[Batch], None]


class AsyncClient:
    """A farm's HTTP API: jobs, batches, presets, templates, workers."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        return check(await self.http.request(method, url, **kwargs)).json()

    # ---- jobs ------------------------------------------------------------------------------------

    async def submit(
        self,
        prompt: str,
        *,
        image: AssetRef | None = None,
        mask: AssetRef | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> Job:
        """Queues one job (width, height, steps, seed, num_images, renditions, loras, callback_url, ...).

        Image modes: mode="img2img" | "inpaint" | "place", with `image` (and `mask`) as an asset id, an
        asset record or a file path (uploaded first), strength, mask_blur, mask_grow, placement={...}.
        """
        body = job_body(prompt, params)
        for role, ref in (("image", image), ("mask", mask)):
            if ref is not None:
                body[role] = await self._asset_id(ref)
        return cast(Job, await self._json("POST", "/v1/jobs", json=body, headers=idempotency(idempotency_key)))

    # ---- input images (assets) -------------------------------------------------------------------

    async def upload_asset(self, path: str | Path) -> Asset:
        """Uploads a PNG, JPEG or WebP once (the same bytes answer the same asset) and returns its record."""
        file = Path(path)
        files = {"file": (file.name, file.read_bytes())}
        return cast(Asset, await self._json("POST", "/v1/assets", files=files))

    async def get_asset(self, asset_id: str) -> Asset:
        return cast(Asset, await self._json("GET", f"/v1/assets/{asset_id}"))

    async def asset_bytes(self, asset_id: str) -> bytes:
        """The stored input image: an 8-bit sRGB PNG, orientation applied."""
        return check(await self.http.get(f"/v1/assets/{asset_id}/content")).content

    async def _asset_id(self, ref: AssetRef) -> str:
        found = asset_id_or_path(ref)
        return found if isinstance(found, str) else (await self.upload_asset(found))["id"]

    async def get(self, job_id: str) -> Job:
        return cast(Job, await self._json("GET", f"/v1/jobs/{job_id}"))

    async def jobs(self, status: str | None = None, limit: int = 50) -> list[Job]:
        """Recent jobs, newest first (at most `limit`, up to 500), of one status if given."""
        answer = await self._json("GET", "/v1/jobs", params=given(status=status, limit=limit))
        return cast(list[Job], answer["jobs"])

    async def cancel(self, job_id: str) -> Job:
        return cast(Job, await self._json("DELETE", f"/v1/jobs/{job_id}"))

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        on_update: JobProgressFn | None = None,
        raise_on_failure: bool = False,
    ) -> Job:
        """Follows the job's event stream (live steps) until it ends; polls where the server has no stream."""
        deadline = deadline_after(timeout)
        streaming = True
        while True:
            job: Job | None = None
            if streaming:
                try:
                    job = await self._follow_events(job_id, deadline, on_update)
                except NoStream:
                    streaming = False
                    continue
                except (httpx.TransportError, httpx.RemoteProtocolError):
                    job = None  # dropped: check once, then listen again
            if job is None:
                job = await self.get(job_id)
                if on_update:
                    on_update(job)
            if job["status"] in FINAL:
                if raise_on_failure and job["status"] != "succeeded":
                    raise JobFailed(job)
                return job
            check_deadline(deadline, f"job {job_id}", job["status"])
            await asyncio.sleep(poll)

    async def _follow_events(self, job_id: str, deadline: float | None, on_update: JobProgressFn | None) -> Job | None:
        """The final job, or None when the stream ended early; raises NoStream on an older server."""
        url = f"/v1/jobs/{job_id}/events"
        async with self.http.stream("GET", url, timeout=stream_timeout(deadline)) as response:
            if response.status_code >= 400:
                await response.aread()
                raise_for_stream(response)
            parser = EventParser()
            try:
                async for line in response.aiter_lines():
                    if (item := parser.feed(line)) is None:
                        continue
                    event, job = item
                    if on_update:
                        on_update(job)
                    if event == "final":
                        return job
            except httpx.ReadTimeout:
                check_deadline(deadline, f"job {job_id}", "not finished")
        return None

    async def image_bytes(self, job_id: str, index: int = 0, rendition: str | None = None) -> bytes:
        """One image's bytes, or those of one of its renditions by name."""
        return check(await self.http.get(image_path(job_id, index, rendition))).content

    async def download(self, job_id: str, directory: str | Path) -> list[Path]:
        """Writes the job's images and their renditions into `directory`; returns the paths."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        files = job_files(out, await self.get(job_id))
        for path, index, rendition in files:
            path.write_bytes(await self.image_bytes(job_id, index, rendition))
        return [path for path, _, _ in files]

    # ---- batches ---------------------------------------------------------------------------------

    async def create_batch(
        self, rows: list[dict[str, Any]], *, idempotency_key: str | None = None, **options: Any
    ) -> BatchCreated:
        """A batch from rows in memory: template=..., key_column="sku", defaults={...}, preset=..., seed=..."""
        body = {"rows": rows, **given(**options)}
        return cast(
            BatchCreated, await self._json("POST", "/v1/batches", json=body, headers=idempotency(idempotency_key))
        )

    async def upload_batch(
        self,
        path: str | Path,
        *,
        images: str | Path | None = None,
        file_format: str | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> BatchCreated:
        """A batch from a CSV or JSONL file (the same options as create_batch). `images`: a zip, or a directory
        zipped here, whose files the `image` and `mask` columns name (with mode="place" etc.)."""
        files, form = upload_parts(Path(path), file_format, given(**options))
        if images is not None:
            files["images"] = zipped_images(Path(images))
        headers = idempotency(idempotency_key)
        return cast(BatchCreated, await self._json("POST", "/v1/batches", files=files, data=form, headers=headers))

    async def get_batch(self, batch_id: str) -> Batch:
        return cast(Batch, await self._json("GET", f"/v1/batches/{batch_id}"))

    async def batches(self, limit: int = 20, status: str | None = None) -> list[Batch]:
        """Recent batches, newest first; `status`: active, succeeded, failed or canceled."""
        params = given(limit=limit, status=status)
        return cast(list[Batch], (await self._json("GET", "/v1/batches", params=params))["batches"])

    async def cancel_batch(self, batch_id: str) -> Batch:
        return cast(Batch, await self._json("DELETE", f"/v1/batches/{batch_id}"))

    async def retry_failed(self, batch_id: str) -> int:
        return int((await self._json("POST", f"/v1/batches/{batch_id}/retry-failed"))["requeued"])

    async def wait_batch(
        self,
        batch_id: str,
        *,
        timeout: float | None = None,
        poll: float = 1.0,
        on_update: BatchProgressFn | None = None,
    ) -> Batch:
        deadline = deadline_after(timeout)
        while True:
            batch = await self.get_batch(batch_id)
            if on_update:
                on_update(batch)
            if batch["status"] != "active":
                return batch
            check_deadline(deadline, f"batch {batch_id}", f"active ({batch['done']}/{batch['rows']})")
            await asyncio.sleep(poll)

    async def manifest(self, batch_id: str) -> str:
        return check(await self.http.get(f"/v1/batches/{batch_id}/manifest.csv")).text

    async def download_archive(self, batch_id: str, path: str | Path) -> Path:
        """Streams archive.zip to a file (never held in memory)."""
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
        """The images (named by key) and manifest.csv into a directory."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            return extract(await self.download_archive(batch_id, Path(tmp) / "archive.zip"), out)

    # ---- LoRA adapters (brand styles) --------------------------------------------------------------

    async def add_lora(
        self,
        path: str | Path,
        name: str,
        *,
        trigger_words: str | None = None,
        default_scale: float | None = None,
        everyone: bool = False,
    ) -> Lora:
        """Uploads a .safetensors LoRA adapter under a name (again: the name now means the new file). Jobs and
        batches then name it: `submit(..., loras=[{"name": name, "scale": 0.8}])`. `everyone`: admin keys only."""
        files, form = lora_parts(Path(path), name, trigger_words, default_scale, everyone)
        return cast(Lora, await self._json("POST", "/v1/loras", files=files, data=form))

    async def loras(self) -> list[Lora]:
        return cast(list[Lora], (await self._json("GET", "/v1/loras"))["loras"])

    async def get_lora(self, name: str) -> Lora:
        return cast(Lora, await self._json("GET", f"/v1/loras/{name}"))

    async def delete_lora(self, name: str) -> None:
        """Refused (ZfarmError 409) while queued or running jobs use it."""
        check(await self.http.delete(f"/v1/loras/{name}"))

    # ---- the farm --------------------------------------------------------------------------------

    async def presets(self) -> list[JSON]:
        return cast(list[JSON], (await self._json("GET", "/v1/presets"))["presets"])

    async def templates(self) -> list[JSON]:
        return cast(list[JSON], (await self._json("GET", "/v1/templates"))["templates"])

    async def save_template(self, name: str, **fields: Any) -> JSON:
        """template="..." or parts={"subject": ..., "lighting": ...}; negative_prompt, preset."""
        return cast(JSON, await self._json("POST", "/v1/templates", json={"name": name, **given(**fields)}))

    async def workers(self) -> list[Worker]:
        return cast(list[Worker], (await self._json("GET", "/v1/workers"))["workers"])

    async def health(self) -> JSON:
        return cast(JSON, (await self.http.get("/healthz")).json())
