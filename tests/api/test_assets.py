"""POST /v1/assets: checked before decoding, normalized once, stored once per tenant; refusals store nothing."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from api.keys import create_key
from models import Asset
from tests.api.batch_helpers import batch_api
from tests.image_helpers import cutout, decoded, encoded, raw_png


@pytest.fixture
def api(database_url: str, tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    with batch_api(database_url, tmp_path, redis_url, max_asset_pixels=3000 * 3000) as client:
        yield client


def upload(api: TestClient, data: bytes, name: str = "photo.png", **headers: str) -> object:
    return api.post("/v1/assets", files={"file": (name, data, "application/octet-stream")}, headers=headers)


def stored(api: TestClient) -> tuple[int, int]:
    """(asset rows, files under the storage's assets/ folder): a refusal leaves both as they were."""
    with api.app.state.sessions() as s:
        rows = int(s.scalar(select(func.count()).select_from(Asset)) or 0)
    root = Path(api.app.state.storage.root) / "assets"
    return rows, sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def test_an_upload_answers_its_record_and_the_same_bytes_the_same_asset(api: TestClient) -> None:
    data = encoded(cutout(), "PNG")
    first = upload(api, data, "bottle.png")
    assert first.status_code == 201, first.text
    record = first.json()
    assert {k: record[k] for k in ("width", "height", "format", "has_alpha")} == {
        "width": 300,
        "height": 400,
        "format": "png",
        "has_alpha": True,
    }
    assert record["product_box"] == [58, 38, 185, 325] and record["filename"] == "bottle.png"
    again = upload(api, data, "other-name.png")
    assert again.status_code == 200 and again.json()["id"] == record["id"]
    assert stored(api) == (1, 1)
    assert api.get(f"/v1/assets/{record['id']}").json() == record
    content = api.get(f"/v1/assets/{record['id']}/content")
    assert content.status_code == 200 and content.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(decoded(content.content)), np.asarray(cutout()))


def test_a_jpeg_is_stored_as_png_with_what_was_converted(api: TestClient) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    response = upload(api, encoded(Image.new("RGB", (64, 32), (9, 99, 199)), "JPEG", exif=exif.tobytes()), "p.jpg")
    assert response.status_code == 201
    record = response.json()
    assert (record["format"], record["width"], record["height"]) == ("jpeg", 32, 64)
    assert record["conversions"] == ["EXIF orientation 8 applied"]
    assert Image.open(io.BytesIO(api.get(record["url"]).content)).format == "PNG"


@pytest.mark.parametrize(
    ("data", "name", "rule"),
    [
        (raw_png(50_000, 50_000), "bomb.png", "declares 2500000000 pixels; at most 9000000"),
        (raw_png(4000, 3000), "big.png", "declares 4000x3000 = 12000000 pixels; at most 9000000"),
        (encoded(Image.effect_noise((300, 300), 50).convert("RGB"))[:3000], "cut.png", "truncated or corrupt"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "logo.png", "not a PNG"),
        (b"<html><body>hello</body></html>", "page.png", "not a PNG, JPEG or WebP"),
        (
            encoded(
                Image.new("RGB", (32, 32)), "WEBP", save_all=True, append_images=[Image.new("RGB", (32, 32), "red")]
            ),
            "anim.webp",
            "is animated",
        ),
        (b"", "empty.png", "is empty"),
    ],
)
def test_bad_uploads_are_refused_naming_the_rule_and_nothing_is_stored(
    api: TestClient, data: bytes, name: str, rule: str
) -> None:
    response = upload(api, data, name)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["field"] == "file" and rule in problem["rule"], problem
    assert problem["value"] is not None
    assert stored(api) == (0, 0)


def test_an_upload_over_the_body_limit_is_413_and_stores_nothing(
    database_url: str, tmp_path: Path, redis_url: str
) -> None:
    with batch_api(database_url, tmp_path, redis_url, max_upload_bytes=20_000) as small:
        noisy = encoded(Image.effect_noise((256, 256), 80).convert("RGB"))
        assert len(noisy) > 20_000
        response = upload(small, noisy)
        assert response.status_code == 413 and "20000 bytes" in response.text
        assert stored(small) == (0, 0)


def test_unknown_asset_is_404(api: TestClient) -> None:
    assert api.get("/v1/assets/" + "0" * 32).status_code == 404
    assert api.get("/v1/assets/" + "0" * 32 + "/content").status_code == 404


@pytest.fixture
def tenants(tmp_path: Path, redis_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    with batch_api(url, tmp_path, redis_url, auth=True) as client:
        with client.app.state.sessions() as s:
            keys = {
                "acme": create_key(s, tenant="acme", is_admin=False)[1],
                # A tenant name of its own: the submit window in Redis outlives the test.
                "globex": create_key(s, tenant=f"globex-{uuid.uuid4().hex[:8]}", submits_per_minute=2)[1],
            }
        yield client, {t: f"Bearer {k}" for t, k in keys.items()}


def test_assets_belong_to_their_tenant(tenants: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = tenants
    data = encoded(cutout(), "PNG")
    mine = upload(client, data, Authorization=auth["acme"]).json()
    for path in (f"/v1/assets/{mine['id']}", f"/v1/assets/{mine['id']}/content"):
        assert client.get(path, headers={"Authorization": auth["globex"]}).status_code == 404
        assert client.get(path, headers={"Authorization": auth["acme"]}).status_code == 200
    job = {"prompt": "a bottle on a table", "mode": "place", "image": mine["id"], "width": 512, "height": 512}
    refused = client.post("/v1/jobs", json=job, headers={"Authorization": auth["globex"]})
    assert refused.status_code == 404 and "image" in refused.text
    # The same bytes from another tenant are that tenant's own asset.
    theirs = upload(client, data, Authorization=auth["globex"])
    assert theirs.status_code == 201 and theirs.json()["id"] != mine["id"]


def test_uploads_count_against_the_tenants_submit_rate(tenants: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = tenants
    answers = [
        upload(client, encoded(Image.new("RGB", (32, 32), (i, 0, 0))), Authorization=auth["globex"]).status_code
        for i in range(3)
    ]
    assert answers == [201, 201, 429]
