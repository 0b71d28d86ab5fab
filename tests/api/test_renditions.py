"""Renditions through the API: refusals naming the field, what is stored, manifest and archive, dedup, uploads."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.job_identity import content_hash, normalized_parameters
from core.storage import image_key
from models import Image, Job, JobStatus
from tests.api.batch_helpers import TEMPLATE, batch_api, rows, written_and_queued

THUMB = {"name": "thumb", "width": 128, "height": 128, "format": "webp", "quality": 80}


@pytest.fixture
def api(database_url: str, tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    with batch_api(database_url, tmp_path, redis_url) as client:
        yield client


def _finish(api: TestClient, job_id: str, files: dict[str, bytes]) -> None:
    """What a worker records: the rendered image ("") and each rendition, with their bytes in storage."""
    storage = api.app.state.storage
    with api.app.state.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        specs = {r["name"]: r for r in job.renditions or []}
        for name, payload in files.items():
            fmt = specs[name]["format"] if name else job.output_format
            key = image_key(job.id, 0, fmt, name)
            storage.put(key, payload)
            size = (specs[name]["width"], specs[name]["height"]) if name else (job.width, job.height)
            s.add(
                Image(
                    job_id=job.id,
                    index=0,
                    rendition=name,
                    seed=job.seed,
                    width=size[0],
                    height=size[1],
                    format=fmt,
                    sha256=hashlib.sha256(payload).hexdigest(),
                    bytes=len(payload),
                    storage_key=key,
                )
            )
        s.execute(update(Job).where(Job.id == job.id).values(status=JobStatus.SUCCEEDED, model_id="tiny", attempts=1))
        s.commit()


@pytest.mark.parametrize(
    ("renditions", "field", "value", "rule"),
    [
        ([{"width": 512, "height": 128}], "renditions.0.width", 512, "at most the job's width 256"),
        ([THUMB, {"width": 128, "height": 300}], "renditions.1.height", 300, "at most the job's height 256"),
        ([THUMB, {**THUMB, "width": 64}], "renditions", None, "names must be unique within a job; repeated: thumb"),
        ([{**THUMB, "name": "Big Thumb"}], "renditions.0.name", "Big Thumb", "should match pattern"),
        ([{**THUMB, "format": "gif"}], "renditions.0.format", "gif", "'png', 'webp' or 'jpeg'"),
        ([{**THUMB, "fit": "stretch"}], "renditions.0.fit", "stretch", "'cover' or 'contain'"),
        ([{"width": 8, "height": 128}], "renditions.0.width", 8, "greater than or equal to 16"),
        ([{"width": 64 + i, "height": 64} for i in range(5)], "renditions", None, "at most 4 items"),
    ],
)
def test_bad_renditions_are_refused_naming_the_field_and_nothing_is_queued(
    api: TestClient, redis_url: str, renditions: list, field: str, value: object, rule: str
) -> None:
    before = written_and_queued(api, redis_url)
    body = {"prompt": "a mug", "width": 256, "height": 256, "renditions": renditions}
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    [problem] = [p for p in response.json()["detail"] if p["field"] == field]
    assert rule in problem["rule"]
    if value is not None:
        assert problem["value"] == value
    assert written_and_queued(api, redis_url) == before


def test_an_accepted_job_records_its_renditions_with_default_names(api: TestClient) -> None:
    body = {"prompt": "a mug", "width": 512, "height": 512, "renditions": [THUMB, {"width": 256, "height": 192}]}
    job = api.post("/v1/jobs", json=body).json()
    asked = job["parameters"]["renditions"]
    assert [r["name"] for r in asked] == ["thumb", "256x192"]
    assert asked[1] == {"name": "256x192", "width": 256, "height": 192, "format": "webp", "quality": 85, "fit": "cover"}
    with api.app.state.sessions() as s:
        assert s.get(Job, job["id"]).renditions == asked


def test_renditions_are_part_of_the_content_hash_and_a_job_without_them_hashes_as_before() -> None:
    params = {
        "prompt": "a mug",
        "width": 512,
        "height": 512,
        "steps": 8,
        "guidance_scale": 0.0,
        "seed": 1,
        "num_images": 1,
        "output_format": "png",
        "quality": 95,
    }
    with_thumb = {**params, "renditions": [{**THUMB, "fit": "cover"}]}
    assert "renditions" not in normalized_parameters({**params, "renditions": []})
    assert content_hash({**params, "renditions": []}, "m", None) == content_hash(params, "m", None)
    assert content_hash(with_thumb, "m", None) != content_hash(params, "m", None)
    padded = {**params, "renditions": [{**THUMB, "fit": "contain"}]}
    assert content_hash(padded, "m", None) != content_hash(with_thumb, "m", None)


def test_renditions_are_served_listed_and_reused_with_their_image(api: TestClient) -> None:
    body = {"prompt": "a linen shirt", "width": 256, "height": 256, "seed": 7, "renditions": [THUMB]}
    original = api.post("/v1/jobs", json=body).json()
    _finish(api, original["id"], {"": b"master bytes", "thumb": b"thumb bytes"})
    done = api.get(f"/v1/jobs/{original['id']}").json()
    [image] = done["images"]
    [thumb] = image["renditions"]
    assert (thumb["name"], thumb["width"], thumb["format"]) == ("thumb", 128, "webp")
    served = api.get(thumb["url"])
    assert served.status_code == 200 and served.content == b"thumb bytes"
    assert served.headers["content-type"] == "image/webp"
    assert api.get(image["url"]).content == b"master bytes"
    missing = api.get(f"/v1/jobs/{original['id']}/images/0/renditions/banner")
    assert missing.status_code == 404 and "made: thumb" in missing.json()["detail"]
    # the same request again reuses both files; without the rendition it is a different job
    reused = api.post("/v1/jobs", json=body).json()
    assert reused["reused_from"] == original["id"] and reused["images"][0]["renditions"][0]["sha256"] == thumb["sha256"]
    plain = api.post("/v1/jobs", json={**body, "renditions": []}).json()
    assert plain["status"] == "queued" and plain["reused_from"] is None


def test_batch_renditions_go_to_every_job_and_rows_too_small_for_them_are_refused(
    api: TestClient, redis_url: str
) -> None:
    before = written_and_queued(api, redis_url)
    catalog = [*rows(2), {"sku": "SMALL", "product": "pin", "width": 256}]
    body = {"template": TEMPLATE, "rows": catalog, "renditions": [{**THUMB, "width": 300, "height": 300}]}
    refused = api.post("/v1/batches", json=body)
    assert refused.status_code == 422, refused.text
    [problem] = refused.json()["detail"]
    assert (problem["row"], problem["field"], problem["value"]) == (3, "renditions.0.width", 300)
    assert "at most the job's width 256" in problem["rule"]
    assert written_and_queued(api, redis_url) == before
    # with a size every row has, every job gets the rendition and the batch records it
    created = api.post("/v1/batches", json={**body, "renditions": [THUMB]})
    assert created.status_code == 202, created.text
    batch = api.get(created.json()["url"]).json()
    assert batch["renditions"] == [{**THUMB, "fit": "cover"}]
    with api.app.state.sessions() as s:
        jobs = s.scalars(select(Job).where(Job.batch_id == batch["id"])).all()
    assert [j.renditions for j in jobs] == [[{**THUMB, "fit": "cover"}]] * 3


def test_uploaded_batch_takes_renditions_as_a_json_form_field(api: TestClient) -> None:
    csv_file = {"file": ("c.csv", b"sku,product\nA,mug\n")}
    bad = api.post("/v1/batches", files=csv_file, data={"template": TEMPLATE, "renditions": "[{width: 1}]"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["field"] == "renditions" and "must be a JSON list" in bad.json()["detail"][0]["rule"]
    good = api.post(
        "/v1/batches", files=csv_file, data={"template": TEMPLATE, "renditions": '[{"width": 200, "height": 100}]'}
    )
    assert good.status_code == 202, good.text
    assert api.get(good.json()["url"]).json()["renditions"][0]["name"] == "200x100"


def test_archive_puts_renditions_in_a_folder_per_rendition_and_the_manifest_lists_them(api: TestClient) -> None:
    body = {"template": TEMPLATE, "rows": rows(2), "renditions": [THUMB]}
    batch = api.post("/v1/batches", json=body).json()
    with api.app.state.sessions() as s:
        jobs = {j.item_key: j.id for j in s.scalars(select(Job).where(Job.batch_id == batch["id"]))}
    for key, job_id in jobs.items():
        _finish(api, job_id, {"": f"{key} master".encode(), "thumb": f"{key} thumb".encode()})
    archive = api.get(batch["archive_url"])
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
        assert sorted(zf.namelist()) == [
            "SKU-001.png",
            "SKU-002.png",
            "manifest.csv",
            "thumb/SKU-001.webp",
            "thumb/SKU-002.webp",
        ]
        assert zf.read("thumb/SKU-002.webp") == b"SKU-002 thumb"
        lines = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))
    thumbs = [line for line in lines if line["rendition"] == "thumb"]
    assert [line["file"] for line in thumbs] == ["thumb/SKU-001.webp", "thumb/SKU-002.webp"]
    assert thumbs[0]["url"].endswith(f"/v1/jobs/{jobs['SKU-001']}/images/0/renditions/thumb")
    assert (thumbs[0]["width"], thumbs[0]["format"]) == ("128", "webp")
    assert api.get(thumbs[0]["url"]).content == b"SKU-001 thumb"
    status = api.get(batch["url"]).json()
    assert status["images_done"] == 2  # renditions are not images rendered
