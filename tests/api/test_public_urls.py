"""Links in answers come from ZFARM_PUBLIC_URL, never from a client's Host header; served files say nosniff
(issue 17, item 5)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from pydantic import ValidationError

from core.settings import FarmSettings
from models import Image, Job, JobStatus
from tests.api.batch_helpers import TEMPLATE, batch_api, rows
from tests.image_helpers import encoded

EVIL = {"Host": "evil.example"}
PUBLIC = "https://farm.example.com/zfarm"


def _rendered(client: TestClient, job_id: str) -> None:
    """The job as a worker leaves it: succeeded with one stored image (no worker runs in these tests)."""
    data = encoded(PILImage.new("RGB", (256, 256), (200, 30, 30)))
    key = f"{job_id}/0.png"
    client.app.state.storage.put(key, data)  # type: ignore[attr-defined]
    with client.app.state.sessions() as s:  # type: ignore[attr-defined]
        job = s.get(Job, job_id)
        job.status = JobStatus.SUCCEEDED
        s.add(
            Image(
                job_id=job_id,
                index=0,
                seed=job.seed,
                width=256,
                height=256,
                format="png",
                sha256=hashlib.sha256(data).hexdigest(),
                bytes=len(data),
                storage_key=key,
            )
        )
        s.commit()


def _everything(client: TestClient) -> list[tuple[str, str, dict[str, str]]]:
    """(what, text, headers) of every answer that carries links, each asked with Host: evil.example."""
    seen = []

    def get(what: str, method: str, path: str, **kwargs: object) -> dict:
        response = client.request(method, path, headers=EVIL, **kwargs)  # type: ignore[arg-type]
        assert response.status_code < 300, (what, response.status_code, response.text)
        text = response.text
        if path.endswith(".zip"):
            text = zipfile.ZipFile(io.BytesIO(response.content)).read("manifest.csv").decode()
        seen.append((what, text, dict(response.headers)))
        return response.json() if "json" in response.headers.get("content-type", "") else {}

    job = get("job", "POST", "/v1/jobs", json={"prompt": "a mug", "seed": 1})
    _rendered(client, job["id"])
    get("job record", "GET", f"/v1/jobs/{job['id']}")
    get("job list", "GET", "/v1/jobs")
    batch = get("batch", "POST", "/v1/batches", json={"template": TEMPLATE, "rows": rows(2)})
    get("batch record", "GET", f"/v1/batches/{batch['id']}")
    get("manifest", "GET", f"/v1/batches/{batch['id']}/manifest.csv")
    get("archive", "GET", f"/v1/batches/{batch['id']}/archive.zip")
    get("review items", "GET", f"/v1/batches/{batch['id']}/items")
    png = encoded(PILImage.new("RGB", (300, 300), (10, 120, 200)))
    get("asset", "POST", "/v1/assets", files={"file": ("p.png", png)})
    return seen


@pytest.fixture
def public_api(tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    with batch_api(f"sqlite:///{tmp_path / 'z.db'}", tmp_path, redis_url, public_url=PUBLIC) as client:
        yield client


def test_links_use_the_public_url_and_never_the_host_header(public_api: TestClient) -> None:
    seen = _everything(public_api)
    for what, text, headers in seen:
        assert "evil.example" not in text + headers.get("location", ""), what
    assert all(PUBLIC + "/v1/" in text for what, text, _ in seen if what in ("job record", "batch", "asset"))
    assert seen[0][2]["location"].startswith(PUBLIC + "/v1/jobs/")


def test_without_a_public_url_links_follow_the_url_the_client_used(tmp_path: Path, redis_url: str) -> None:
    # What the README says: unset, the Host header decides (fine for one farm reached by one name).
    with batch_api(f"sqlite:///{tmp_path / 'z.db'}", tmp_path, redis_url) as client:
        job = client.post("/v1/jobs", json={"prompt": "a mug"}, headers=EVIL).json()
        _rendered(client, job["id"])
        [image] = client.get(f"/v1/jobs/{job['id']}", headers=EVIL).json()["images"]
        assert image["url"] == f"http://evil.example/v1/jobs/{job['id']}/images/0"


def test_served_files_and_every_other_answer_say_nosniff(public_api: TestClient) -> None:
    seen = _everything(public_api)
    job_id = next(t for w, t, _ in seen if w == "job record").split('"id":"')[1].split('"')[0]
    image = public_api.get(f"/v1/jobs/{job_id}/images/0")
    asset_id = next(t for w, t, _ in seen if w == "asset").split('"id":"')[1].split('"')[0]
    content = public_api.get(f"/v1/assets/{asset_id}/content")
    page, missing = public_api.get("/"), public_api.get("/v1/jobs/nope")
    assert image.status_code == content.status_code == 200 and image.headers["content-type"] == "image/png"
    for response in (image, content, page, missing):
        assert response.headers["x-content-type-options"] == "nosniff", response.url
    for what, _, headers in seen:
        assert headers["x-content-type-options"] == "nosniff", what


@pytest.mark.parametrize("value", ["farm.example.com", "ftp://farm.example.com", "https://", "https://a b"])
def test_a_public_url_that_is_not_an_http_url_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="public_url"):
        FarmSettings(public_url=value)
