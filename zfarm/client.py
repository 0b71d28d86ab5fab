"""Python client for the zfarm HTTP API. Depends on httpx only (and the standard library).

from zfarm.client import Client
with Client("http://127.0.0.1:8000") as farm:
    job = farm.submit("a ceramic mug on marble", seed=7)
    job = farm.wait(job["id"])
    paths = farm.download(job["id"], "out/")
    batch = farm.upload_batch("catalog.csv", template="studio photo of a {product}", preset="square-1024")
    farm.wait_batch(batch["id"])
    farm.download_batch(batch["id"], "out/catalog/")  # images named by key + manifest.csv
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from models.records import image_path
from zfarm.client_batches import AsyncBatchCalls, BatchCalls

FINAL = frozenset({"succeeded", "failed", "canceled", "dead"})
EXT = {"png": "png", "webp": "webp", "jpeg": "jpg"}
Job = dict[str, Any]
ProgressFn = Callable[[Job], None]


class ZfarmError(RuntimeError):
    def __init__(self, status_code: int, detail: Any) -> None:
        self.status_code, self.detail = status_code, detail
        super().__init__(f"HTTP {status_code}: {_describe(detail)}")


class JobFailed(RuntimeError):
    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job['id']} ended {job['status']}: {job.get('error')}")


def _describe(detail: Any) -> str:
    if isinstance(detail, dict) and "detail" in detail:
        detail = detail["detail"]
    if isinstance(detail, list):
        return "; ".join(d.get("message", str(d)) if isinstance(d, dict) else str(d) for d in detail)
    return str(detail)


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            detail = response.json()
        except ValueError:
            detail = response.text
        raise ZfarmError(response.status_code, detail)
    return response


def _job_body(prompt: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": prompt, **{k: v for k, v in params.items() if v is not None}}


def _job_files(directory: Path, job: Job) -> list[tuple[Path, int, str | None]]:
    """(path, image index, rendition) of every file of a job: `ID_0.png`, and `ID_0_thumb.webp` per rendition."""
    files = []
    for image in job["images"]:
        stem = f"{job['id']}_{image['index']}"
        files.append((directory / f"{stem}.{EXT[image['format']]}", image["index"], None))
        for r in image.get("renditions", []):
            files.append((directory / f"{stem}_{r['name']}.{EXT[r['format']]}", image["index"], r["name"]))
    return files


class _NoStream(Exception):
    """The server has no event stream for jobs (an older zfarm): fall back to polling."""


class _EventParser:
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


def _raise_for_stream(response: httpx.Response) -> None:
    if response.status_code == 404:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = None
        if detail == "Not Found":  # the framework's answer for an unknown route, not for an unknown job
            raise _NoStream
    _check(response)


def _stream_timeout(deadline: float | None) -> httpx.Timeout:
    # The server sends a keep-alive every 10 s; reading no longer than the deadline keeps `timeout` honest.
    read = 30.0 if deadline is None else max(0.1, min(30.0, deadline - time.monotonic()))
    return httpx.Timeout(10.0, read=read)


def _check_deadline(deadline: float | None, job_id: str, job: Job | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        status = job["status"] if job else "not finished"
        raise TimeoutError(f"job {job_id} still {status} after the timeout")


class Client(BatchCalls):
    """Synchronous client."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def submit(self, prompt: str, *, idempotency_key: str | None = None, **params: Any) -> Job:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return _check(self.http.post("/v1/jobs", json=_job_body(prompt, params), headers=headers)).json()

    def get(self, job_id: str) -> Job:
        return _check(self.http.get(f"/v1/jobs/{job_id}")).json()

    def cancel(self, job_id: str) -> Job:
        return _check(self.http.delete(f"/v1/jobs/{job_id}")).json()

    def workers(self) -> list[dict[str, Any]]:
        return _check(self.http.get("/v1/workers")).json()["workers"]

    def health(self) -> dict[str, Any]:
        return self.http.get("/healthz").json()

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        on_update: ProgressFn | None = None,
        raise_on_failure: bool = False,
    ) -> Job:
        """Follows the job's event stream (live steps) until it ends; polls where the server has no stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        streaming = True
        while True:
            if streaming:
                try:
                    job = self._follow_events(job_id, deadline, on_update)
                except _NoStream:
                    streaming = False
                    continue
                except (httpx.TransportError, httpx.RemoteProtocolError):
                    job = None  # dropped: check once, then listen again
            else:
                job = None
            if job is None:
                job = self.get(job_id)
                if on_update:
                    on_update(job)
            if job["status"] in FINAL:
                if raise_on_failure and job["status"] != "succeeded":
                    raise JobFailed(job)
                return job
            _check_deadline(deadline, job_id, job)
            time.sleep(poll)

    def _follow_events(self, job_id: str, deadline: float | None, on_update: ProgressFn | None) -> Job | None:
        """Returns the final job, or None when the stream ended early; raises _NoStream on an older server."""
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=_stream_timeout(deadline)) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for_stream(response)
            parser = _EventParser()
            try:
                for line in response.iter_lines():
                    if (item := parser.feed(line)) is None:
                        continue
                    event, job = item
                    if on_update:
                        on_update(job)
                    if event == "final":
                        return job
            except httpx.ReadTimeout:
                _check_deadline(deadline, job_id, None)
        return None

    def image_bytes(self, job_id: str, index: int = 0, rendition: str | None = None) -> bytes:
        """One image's bytes, or those of one of its renditions by name."""
        return _check(self.http.get(image_path(job_id, index, rendition))).content

    def download(self, job_id: str, directory: str | Path) -> list[Path]:
        """Writes the job's images and their renditions into `directory`; returns the paths."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        files = _job_files(out, self.get(job_id))
        for path, index, rendition in files:
            path.write_bytes(self.image_bytes(job_id, index, rendition))
        return [path for path, _, _ in files]


class AsyncClient(AsyncBatchCalls):
    """Asynchronous client with the same calls."""

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

    async def submit(self, prompt: str, *, idempotency_key: str | None = None, **params: Any) -> Job:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return _check(await self.http.post("/v1/jobs", json=_job_body(prompt, params), headers=headers)).json()

    async def get(self, job_id: str) -> Job:
        return _check(await self.http.get(f"/v1/jobs/{job_id}")).json()

    async def cancel(self, job_id: str) -> Job:
        return _check(await self.http.delete(f"/v1/jobs/{job_id}")).json()

    async def workers(self) -> list[dict[str, Any]]:
        return _check(await self.http.get("/v1/workers")).json()["workers"]

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        on_update: ProgressFn | None = None,
        raise_on_failure: bool = False,
    ) -> Job:
        """Follows the job's event stream (live steps) until it ends; polls where the server has no stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        streaming = True
        while True:
            if streaming:
                try:
                    job = await self._follow_events(job_id, deadline, on_update)
                except _NoStream:
                    streaming = False
                    continue
                except (httpx.TransportError, httpx.RemoteProtocolError):
                    job = None
            else:
                job = None
            if job is None:
                job = await self.get(job_id)
                if on_update:
                    on_update(job)
            if job["status"] in FINAL:
                if raise_on_failure and job["status"] != "succeeded":
                    raise JobFailed(job)
                return job
            _check_deadline(deadline, job_id, job)
            await asyncio.sleep(poll)

    async def _follow_events(self, job_id: str, deadline: float | None, on_update: ProgressFn | None) -> Job | None:
        url = f"/v1/jobs/{job_id}/events"
        async with self.http.stream("GET", url, timeout=_stream_timeout(deadline)) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for_stream(response)
            parser = _EventParser()
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
                _check_deadline(deadline, job_id, None)
        return None

    async def image_bytes(self, job_id: str, index: int = 0, rendition: str | None = None) -> bytes:
        return _check(await self.http.get(image_path(job_id, index, rendition))).content

    async def download(self, job_id: str, directory: str | Path) -> list[Path]:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        files = _job_files(out, await self.get(job_id))
        for path, index, rendition in files:
            path.write_bytes(await self.image_bytes(job_id, index, rendition))
        return [path for path, _, _ in files]
