"""The API on a bucket: uploads land in it, files are served from it, and the archive opens one object at a time.
A file the rows name but the store has lost answers 404 naming the job and index, on a bucket or on local disk."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from core.storage import Storage, image_key, lora_key
from models import Image, Job, JobStatus
from tests.api.batch_helpers import TEMPLATE, batch_api, rows
from tests.image_helpers import encoded
from tests.lora_helpers import make_tiny_lora
from tests.storage.conftest import Bucket


@pytest.fixture
def s3_api(bucket: Bucket, tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    overrides = {"storage_url": bucket.url, "s3_endpoint_url": bucket.endpoint}
    with batch_api(f"sqlite:///{tmp_path / 'zfarm.db'}", tmp_path / "data", redis_url, **overrides) as client:
        yield client


def _finish(api: TestClient, job_id: str, payload: bytes) -> str:
    """What a worker records: image 0 of the job, its bytes in the app's store."""
    key = image_key(job_id, 0, "png")
    api.app.state.storage.put(key, payload)
    with api.app.state.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        s.add(
            Image(
                job_id=job_id,
                index=0,
                rendition="",
                seed=job.seed,
                width=job.width,
                height=job.height,
                format="png",
                sha256=hashlib.sha256(payload).hexdigest(),
                bytes=len(payload),
                storage_key=key,
            )
        )
        s.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.SUCCEEDED, model_id="tiny", attempts=1))
        s.commit()
    return key


class CountingStorage:
    """The app's store, counting the objects open at once (a body counts until it is closed)."""

    def __init__(self, inner: Storage) -> None:
        self.inner, self.open_now, self.most_open, self.opened = inner, 0, 0, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def open(self, key: str) -> BinaryIO:
        body = self.inner.open(key)
        self.opened += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        close = body.close

        def closed() -> None:
            self.open_now -= 1
            close()

        body.close = closed  # type: ignore[method-assign]
        return body


def test_the_archive_streams_objects_from_the_bucket_one_at_a_time(s3_api: TestClient, bucket: Bucket) -> None:
    batch = s3_api.post("/v1/batches", json={"template": TEMPLATE, "rows": rows(12)}).json()
    with s3_api.app.state.sessions() as s:
        jobs = {j.item_key: j.id for j in s.scalars(select(Job).where(Job.batch_id == batch["id"]))}
    for sku, job_id in jobs.items():
        _finish(s3_api, job_id, sku.encode() * 100_000)  # 700 kB each: several chunks per member
    counting = CountingStorage(s3_api.app.state.storage)
    s3_api.app.state.storage = counting
    with s3_api.stream("GET", batch["archive_url"]) as answer:
        assert answer.status_code == 200
        data = b"".join(answer.iter_bytes())
    assert (counting.opened, counting.most_open) == (12, 1)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for sku, job_id in jobs.items():
            assert zf.read(f"{sku}.png") == bucket.object(image_key(job_id, 0, "png"))


def test_uploads_go_to_the_bucket_and_are_served_from_it(s3_api: TestClient, bucket: Bucket, tmp_path: Path) -> None:
    from PIL import Image as PILImage

    asset = s3_api.post(
        "/v1/assets", files={"file": ("p.png", encoded(PILImage.new("RGB", (64, 48), "red")), "image/png")}
    ).json()
    key = f"assets/{asset['id'][:2]}/{asset['id']}.png"
    assert s3_api.get(f"/v1/assets/{asset['id']}/content").content == bucket.object(key)
    adapter = make_tiny_lora(tmp_path / "brand.safetensors")
    with adapter.open("rb") as fh:
        lora = s3_api.post("/v1/loras", files={"file": ("brand.safetensors", fh)}, data={"name": "brand"}).json()
    assert bucket.object(lora_key(lora["sha256"])) == adapter.read_bytes()
    assert not list((tmp_path / "data").rglob("*.png")) and not list((tmp_path / "data").rglob("*.safetensors"))
    bucket.client.delete_object(Bucket=bucket.name, Key=f"farm/{key}")
    gone = s3_api.get(f"/v1/assets/{asset['id']}/content")
    assert gone.status_code == 404 and gone.json()["detail"].startswith(f"asset {asset['id']}: its bytes are missing")


def test_a_lost_local_file_answers_404_naming_the_job_and_index(tmp_path: Path, redis_url: str) -> None:
    with batch_api(f"sqlite:///{tmp_path / 'zfarm.db'}", tmp_path / "data", redis_url) as api:
        job_id = api.post("/v1/jobs", json={"prompt": "a cup", "width": 256, "height": 256}).json()["id"]
        key = _finish(api, job_id, b"png bytes")
        assert api.get(f"/v1/jobs/{job_id}/images/0").content == b"png bytes"
        (tmp_path / "data" / "images" / key).unlink()
        gone = api.get(f"/v1/jobs/{job_id}/images/0")
    assert gone.status_code == 404
    assert gone.json()["detail"] == f"job {job_id} image 0: its bytes are missing from storage (key {key})"


def test_healthz_reports_a_bucket_that_went_away(s3_api: TestClient, bucket: Bucket) -> None:
    assert s3_api.get("/healthz").json()["storage"] == "ok"
    bucket.client.delete_bucket(Bucket=bucket.name)
    health = s3_api.get("/healthz")
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert health.json()["storage"] == (
        f"error: storage {bucket.url} at {bucket.endpoint} cannot be used: no such bucket (create it first)"
    )
