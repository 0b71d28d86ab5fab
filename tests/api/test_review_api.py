"""The catalog review API: rows by page and filter, approve / reject / re-roll, the manifest's `approved` column,
the archive of approved rows, and the dry run (issue 16, item 6)."""

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

from core.storage import image_key
from models import Image, Job, JobStatus
from tests.api.batch_helpers import TEMPLATE, batch_api, rows


@pytest.fixture
def api(database_url: str, tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    with batch_api(database_url, tmp_path, redis_url) as client:
        yield client


def _finish(api: TestClient, job_id: str) -> None:
    """What a worker records for a succeeded job (rendering itself is the e2e tests' business)."""
    payload = hashlib.sha256(job_id.encode()).digest() * 4
    key = image_key(job_id, 0, "png")
    api.app.state.storage.put(key, payload)
    with api.app.state.sessions() as s:
        job = s.get(Job, job_id)
        s.add(Image(job_id=job_id, index=0, seed=job.seed, width=job.width, height=job.height, format="png",
                    sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload), storage_key=key))  # fmt: skip
        s.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.SUCCEEDED, model_id="tiny", attempts=1))
        s.commit()


def _batch(api: TestClient, n: int) -> str:
    created = api.post("/v1/batches", json={"template": TEMPLATE, "rows": rows(n), "name": "spring"})
    assert created.status_code == 202, created.text
    return created.json()["id"]


def _items(api: TestClient, batch_id: str, **params: object) -> dict:
    page = api.get(f"/v1/batches/{batch_id}/items", params=params)
    assert page.status_code == 200, page.text
    return page.json()


def test_rows_page_by_page_with_status_and_approval_filters(api: TestClient) -> None:
    batch_id = _batch(api, 120)
    first = _items(api, batch_id, limit=50)
    assert first["total"] == 120 and [i["key"] for i in first["items"]][:2] == ["SKU-001", "SKU-002"]
    last = _items(api, batch_id, offset=100, limit=50)
    assert [i["row"] for i in last["items"]] == list(range(101, 121))
    job_id = first["items"][0]["job_id"]
    _finish(api, job_id)
    assert _items(api, batch_id, status="succeeded")["total"] == 1
    assert _items(api, batch_id, status="queued")["total"] == 119
    assert api.post(f"/v1/batches/{batch_id[:8]}/items/SKU-001/approve").json()["review"] == "approved"
    assert [i["key"] for i in _items(api, batch_id, approval="approved")["items"]] == ["SKU-001"]
    assert _items(api, batch_id, approval="pending")["total"] == 119
    item = _items(api, batch_id, approval="approved")["items"][0]
    assert item["images"][0]["url"].endswith(f"/v1/jobs/{job_id}/images/0") and item["test_model_noise"] is True


def test_approve_reject_and_reroll_reach_the_manifest_and_the_archive(api: TestClient) -> None:
    batch_id = _batch(api, 3)
    jobs = {i["key"]: i["job_id"] for i in _items(api, batch_id)["items"]}
    for job_id in jobs.values():
        _finish(api, job_id)
    # when: SKU-001 approved, SKU-002 rejected with a note, SKU-003 re-rolled
    assert api.post(f"/v1/batches/{batch_id}/items/SKU-001/approve").status_code == 200
    rejected = api.post(f"/v1/batches/{batch_id}/items/SKU-002/reject", json={"note": "logo cut off"}).json()
    assert (rejected["review"], rejected["review_note"]) == ("rejected", "logo cut off")
    old = api.get(f"/v1/jobs/{jobs['SKU-003']}").json()
    rerolled = api.post(f"/v1/batches/{batch_id}/items/SKU-003/reroll").json()
    # then: the row has a new queued job with a new seed; the old job keeps its image, outside the batch
    assert rerolled["job_id"] != jobs["SKU-003"] and rerolled["status"] == "queued" and rerolled["rerolls"] == 1
    assert rerolled["seed"] != old["parameters"]["seed"] and rerolled["review"] == "pending"
    assert rerolled["prompt"] == old["parameters"]["prompt"]
    assert api.get(f"/v1/jobs/{jobs['SKU-003']}").json()["batch_id"] is None
    batch = api.get(f"/v1/batches/{batch_id}").json()
    assert (batch["rows"], batch["counts"]["succeeded"], batch["counts"]["queued"], batch["status"]) == (
        3,
        2,
        1,
        "active",
    )
    # a row can be approved only once it succeeded; an unknown key is a 404
    assert api.post(f"/v1/batches/{batch_id}/items/SKU-003/approve").status_code == 409
    assert api.post(f"/v1/batches/{batch_id}/items/SKU-003/reroll").status_code == 409  # still queued
    assert api.post(f"/v1/batches/{batch_id}/items/NOPE/approve").status_code == 404
    _finish(api, rerolled["job_id"])
    assert api.post(f"/v1/batches/{batch_id}/items/SKU-003/approve").json()["review"] == "approved"
    # the manifest says which are approved and points at the re-rolled image
    manifest = list(csv.DictReader(io.StringIO(api.get(f"/v1/batches/{batch_id}/manifest.csv").text)))
    assert [(m["key"], m["approved"]) for m in manifest] == [
        ("SKU-001", "true"),
        ("SKU-002", "false"),
        ("SKU-003", "true"),
    ]
    assert manifest[2]["job_id"] == rerolled["job_id"]
    # the archive of approved rows holds those two images only
    archive = zipfile.ZipFile(io.BytesIO(api.get(f"/v1/batches/{batch_id}/archive.zip?approved=true").content))
    assert sorted(archive.namelist()) == ["SKU-001.png", "SKU-003.png", "manifest.csv"]
    everything = zipfile.ZipFile(io.BytesIO(api.get(f"/v1/batches/{batch_id}/archive.zip").content))
    assert "SKU-002.png" in everything.namelist()
    with api.app.state.sessions() as s:
        assert s.scalar(select(Job.superseded_by).where(Job.id == jobs["SKU-003"])) == rerolled["job_id"]


def test_a_dry_run_previews_the_first_prompts_and_writes_nothing(api: TestClient) -> None:
    body = {"template": TEMPLATE, "rows": rows(12), "preset": "thumbnail-512"}
    preview = api.post("/v1/batches?dry_run=true", json=body)
    assert preview.status_code == 200, preview.text
    answer = preview.json()
    assert (answer["rows"], answer["jobs_queued"], answer["jobs_reused"]) == (12, 12, 0)
    assert len(answer["preview"]) == 10
    first = answer["preview"][0]
    assert (first["key"], first["prompt"], first["width"], first["output_format"]) == (
        "SKU-001", "studio photo of a product 1", 512, "webp")  # fmt: skip
    assert api.get("/v1/batches").json()["batches"] == []
    # every refusal, as the real submission would give them
    bad = api.post("/v1/batches?dry_run=true", json={**body, "rows": [*rows(2), {"sku": "SKU-001", "width": "x"}]})
    assert bad.status_code == 422
    assert {e["column"] for e in bad.json()["detail"]} == {"width", "sku"}
    upload = api.post(
        "/v1/batches?dry_run=true",
        files={"file": ("c.csv", b"sku,product\nA,mug\nB,cup\n")},
        data={"template": TEMPLATE},
    )
    assert upload.status_code == 200 and [p["key"] for p in upload.json()["preview"]] == ["A", "B"]
    assert api.get("/v1/batches").json()["batches"] == []
