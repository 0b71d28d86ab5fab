"""The farm on a bucket: a real `zfarm worker` process with an empty data directory of its own (as on another
host) writes to moto's S3 server; the in-process API serves from the bucket, streamed or by presigned links."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.storage import image_key
from models import Job
from models.records import job_record
from tests.farm_helpers import LiveFarm, live_farm, wait_for
from tests.image_helpers import encoded
from tests.lora_helpers import make_tiny_lora
from tests.storage.conftest import Bucket
from worker.webhooks import job_payload

pytestmark = pytest.mark.e2e
SMALL = {"width": 256, "height": 256, "steps": 2}
IMAGE_SUFFIXES = {".png", ".webp", ".jpg", ".jpeg"}


@dataclass
class S3Farm:
    live: LiveFarm
    bucket: Bucket
    api_dir: Path
    worker_dir: Path


@pytest.fixture(scope="module")
def s3_farm(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Farm]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="zfarm-e2e")
    bucket = Bucket("zfarm-e2e", s3_endpoint, client)
    db, api_dir, worker_dir = (tmp_path_factory.mktemp(n) for n in ("db", "api-data", "worker-data"))
    storage = {"storage_url": bucket.url, "s3_endpoint_url": s3_endpoint}
    with live_farm(
        f"sqlite:///{db / 'zfarm.db'}",
        api_dir,
        settings_overrides={"model": "tiny", **storage},
        worker_dir=worker_dir,
        ZFARM_STORAGE_URL=bucket.url,
        ZFARM_S3_ENDPOINT_URL=s3_endpoint,
    ) as live:
        yield S3Farm(live, bucket, api_dir, worker_dir)


def _images_on_disk(*dirs: Path) -> list[Path]:
    return [p for d in dirs for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]


def test_a_job_is_written_to_the_bucket_and_served_from_it(s3_farm: S3Farm) -> None:
    farm = s3_farm.live
    job_id = farm.submit(prompt="a red mug on a table", output_format="webp", **SMALL)
    record = farm.wait_job(job_id)
    assert record["status"] == "succeeded", record
    key = image_key(job_id, 0, "webp")
    in_bucket = s3_farm.bucket.object(key)
    served = farm.api.get(f"/v1/jobs/{job_id}/images/0")
    assert served.status_code == 200, served.text
    assert served.content == in_bucket and served.headers["content-type"] == "image/webp"
    assert record["images"][0]["sha256"] == served.headers["etag"].strip('"')
    assert record["images"][0]["url"].endswith(f"/v1/jobs/{job_id}/images/0")  # streamed through the API
    # Neither host kept an image on its own disk: the worker wrote straight to the bucket.
    assert _images_on_disk(s3_farm.api_dir, s3_farm.worker_dir) == []


def test_a_deleted_object_answers_404_naming_the_job_and_index(s3_farm: S3Farm) -> None:
    farm = s3_farm.live
    job_id = farm.submit(prompt="a blue lamp", **SMALL)
    assert farm.wait_job(job_id)["status"] == "succeeded"
    s3_farm.bucket.client.delete_object(Bucket=s3_farm.bucket.name, Key=f"farm/{image_key(job_id, 0, 'png')}")
    gone = farm.api.get(f"/v1/jobs/{job_id}/images/0")
    assert gone.status_code == 404
    assert gone.json()["detail"] == (
        f"job {job_id} image 0: its bytes are missing from storage (key {image_key(job_id, 0, 'png')})"
    )


def test_the_batch_archive_streams_from_the_bucket(s3_farm: S3Farm) -> None:
    farm = s3_farm.live
    rows = [{"sku": f"SKU-{i}", "product": f"vase {i}"} for i in range(3)]
    body = {"template": "studio photo of a {product}", "rows": rows, "defaults": SMALL}
    batch = farm.api.post("/v1/batches", json=body).json()
    wait_for(lambda: farm.api.get(batch["url"]).json()["status"] != "active", 120, "the batch")
    archive = farm.api.get(batch["archive_url"])
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
        lines = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))
        assert sorted(zf.namelist()) == ["SKU-0.png", "SKU-1.png", "SKU-2.png", "manifest.csv"]
        for line in lines:
            assert zf.read(line["file"]) == s3_farm.bucket.object(image_key(line["job_id"], 0, "png"))
    assert _images_on_disk(s3_farm.api_dir, s3_farm.worker_dir) == []


def test_presigned_mode_links_records_webhooks_and_manifests_to_the_bucket(s3_farm: S3Farm) -> None:
    farm = s3_farm.live
    body = {
        "template": "studio photo of a {product}",
        "rows": [{"sku": "CHAIR", "product": "chair"}],
        "defaults": SMALL,
    }
    batch = farm.api.post("/v1/batches", json=body).json()
    wait_for(lambda: farm.api.get(batch["url"]).json()["status"] != "active", 120, "the batch")
    [line] = csv.DictReader(io.StringIO(farm.api.get(f"{batch['url']}/manifest.csv").text))
    job_id = line["job_id"]
    in_bucket = s3_farm.bucket.object(image_key(job_id, 0, "png"))
    settings = farm.settings.model_copy(update={"presigned_urls": True, "presigned_url_seconds": 60})
    with TestClient(create_app(settings, queue=farm.api.app.state.enqueuer.queue)) as api:
        url = api.get(f"/v1/jobs/{job_id}").json()["images"][0]["url"]
        assert url.startswith(f"{s3_farm.bucket.endpoint}/zfarm-e2e/farm/jobs/") and "X-Amz-Signature=" in url
        assert httpx.get(url).content == in_bucket  # straight from the bucket, not through the API
        moved = api.get(f"/v1/jobs/{job_id}/images/0", follow_redirects=False)
        assert moved.status_code == 307 and httpx.get(moved.headers["location"]).content == in_bucket
        with api.app.state.sessions() as s:
            job = s.get(Job, job_id)
            assert job is not None
            payload = job_payload(job, "http://farm", api.app.state.presign)
            assert httpx.get(payload["images"][0]["url"]).content == in_bucket
            assert job_record(job, "http://farm")["images"][0]["url"] == f"http://farm/v1/jobs/{job_id}/images/0"
        manifest = list(csv.DictReader(io.StringIO(api.get(f"{batch['url']}/manifest.csv").text)))
        assert httpx.get(manifest[0]["url"]).content == in_bucket
        # The review board's <img> tags load from the bucket too (api/static/app.js uses such links as they are).
        [item] = api.get(f"/v1/batches/{batch['id']}/items").json()["items"]
        assert httpx.get(item["images"][0]["url"]).content == in_bucket


def test_the_worker_reads_input_images_and_adapters_from_the_bucket(s3_farm: S3Farm, tmp_path: Path) -> None:
    from PIL import Image as PILImage

    farm = s3_farm.live
    photo = farm.api.post(
        "/v1/assets", files={"file": ("p.png", encoded(PILImage.new("RGB", (256, 256), "navy")), "image/png")}
    ).json()
    adapter = make_tiny_lora(tmp_path / "brand.safetensors")
    with adapter.open("rb") as fh:
        lora = farm.api.post("/v1/loras", files={"file": ("brand.safetensors", fh)}, data={"name": "brand"}).json()
    job_id = farm.submit(
        prompt="a mug", mode="img2img", image=photo["id"], strength=0.5, steps=4, loras=[{"name": "brand", "scale": 1}]
    )
    record = farm.wait_job(job_id)
    assert record["status"] == "succeeded", record
    assert record["inputs"]["image"]["id"] == photo["id"] and record["loras"][0]["sha256"] == lora["sha256"]
    # The adapter came from the bucket into the worker's own cache (named by its sha256): the one local copy.
    cached = s3_farm.worker_dir / "lora-cache" / f"{lora['sha256']}.safetensors"
    assert cached.read_bytes() == adapter.read_bytes()
    assert farm.api.get(f"/v1/jobs/{job_id}/images/0").content == s3_farm.bucket.object(image_key(job_id, 0, "png"))
    assert _images_on_disk(s3_farm.api_dir, s3_farm.worker_dir) == []
