"""POST /v1/jobs with image modes: every refusal names field, value and rule and stores nothing; accepted jobs
record their inputs and mode parameters, and the content hash tells photos apart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.api.batch_helpers import batch_api, written_and_queued
from tests.image_helpers import cutout, encoded


@pytest.fixture
def api(database_url: str, tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    with batch_api(database_url, tmp_path, redis_url) as client:
        yield client


def _asset(api: TestClient, image: Image.Image, name: str = "a.png") -> dict[str, Any]:
    response = api.post("/v1/assets", files={"file": (name, encoded(image), "image/png")})
    assert response.status_code in (200, 201), response.text
    return response.json()


@pytest.fixture
def assets(api: TestClient) -> dict[str, str]:
    mask = Image.new("L", (320, 256), 0)
    mask.paste(255, (0, 0, 320, 100))
    return {
        "cutout": _asset(api, cutout())["id"],
        "photo": _asset(api, Image.effect_noise((320, 256), 40).convert("RGB"))["id"],
        "mask": _asset(api, mask)["id"],
        "small_mask": _asset(api, Image.new("L", (160, 128)))["id"],
        "wide": _asset(api, Image.new("RGB", (2100, 300), "white"))["id"],
    }


REFUSALS = [
    # (request fields, field, value, words of the rule); "@name" is replaced by that asset's id
    ({"mode": "img2img"}, "image", None, "starts from an image"),
    ({"mode": "img2img", "image": "@photo", "strength": 0}, "strength", 0, "greater than 0"),
    ({"mode": "img2img", "image": "@photo", "strength": 1.5}, "strength", 1.5, "less than or equal to 1"),
    ({"mode": "place", "image": "@cutout", "placement": {"fit": 0}}, "placement.fit", 0, "greater than 0"),
    ({"mode": "place", "image": "@cutout", "placement": {"fit": 1.2}}, "placement.fit", 1.2, "less than or equal"),
    ({"mode": "place", "image": "@cutout", "placement": {"anchor": "top"}}, "placement.anchor", "top", "'center'"),
    ({"mode": "place", "image": "@photo"}, "image", "@photo", "place needs a cutout"),
    ({"mode": "inpaint", "image": "@photo"}, "mask", None, "inpaint needs a mask"),
    ({"mode": "inpaint", "image": "@photo", "mask": "@small_mask"}, "mask", "160x128", "size of its image, 320x256"),
    ({"mode": "img2img", "image": "@photo", "mask": "@mask"}, "mask", "@mask", "only inpaint takes a mask"),
    ({"mode": "inpaint", "image": "@cutout", "mask_blur": 4}, "mask_blur", 4, "only inpaint with a mask"),
    ({"mode": "img2img", "image": "@photo", "mask_grow": 4}, "mask_grow", 4, "only inpaint and place"),
    ({"mode": "inpaint", "image": "@photo", "mask": "@mask", "mask_blur": 65}, "mask_blur", 65, "less than or equal"),
    ({"image": "@photo"}, "image", "@photo", "mode is text"),
    ({"strength": 0.5}, "strength", 0.5, "mode is text"),
    ({"mode": "img2img", "image": "@photo", "width": 512}, "width", "512x1024", "own size, 320x256"),
    ({"mode": "img2img", "image": "@wide"}, "image", "2100x300", "each side must be 256..2048"),
    ({"mode": "place", "image": "@cutout", "placement": {"offset_x": 600}}, "placement.offset_x", 600, "off the"),
    ({"mode": "place", "image": "@cutout", "placement": {"offset_y": -300}}, "placement.offset_y", -300, "off the"),
    ({"mode": "pastiche"}, "mode", "pastiche", "'text', 'img2img', 'inpaint' or 'place'"),
    ({"mode": "img2img", "image": "not-an-id"}, "image", "not-an-id", "should match pattern"),
    (
        {"renditions": [{"name": "main", "background": "white", "width": 2000, "height": 2000, "format": "jpeg"}]},
        "renditions.0.background",
        "white",
        "made from the job's cutout",
    ),
    (
        {"mode": "img2img", "image": "@photo", "renditions": [{"background": "white", "width": 512, "height": 512}]},
        "renditions.0.background",
        "white",
        "mode is img2img",
    ),
    ({"renditions": [{"width": 512, "height": 512, "fill": 0.8}]}, "renditions.0.fill", 0.8, "only with background"),
]


def _fill(value: Any, assets: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("@"):
        return assets[value[1:]]
    if isinstance(value, dict):
        return {k: _fill(v, assets) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("fields", "field", "value", "rule"), REFUSALS)
def test_bad_image_jobs_are_refused_naming_field_value_and_rule_and_nothing_is_queued(
    api: TestClient, redis_url: str, assets: dict[str, str], fields: dict, field: str, value: Any, rule: str
) -> None:
    before = written_and_queued(api, redis_url)
    response = api.post("/v1/jobs", json={"prompt": "a bottle on a marble table", **_fill(fields, assets)})
    assert response.status_code == 422, response.text
    problems = [p for p in response.json()["detail"] if p["field"] == field]
    assert problems, response.json()
    assert rule in problems[0]["rule"] and problems[0]["value"] == _fill(value, assets), problems[0]
    assert written_and_queued(api, redis_url) == before


def test_an_unknown_image_is_404_and_nothing_is_queued(api: TestClient, redis_url: str) -> None:
    before = written_and_queued(api, redis_url)
    response = api.post("/v1/jobs", json={"prompt": "a mug", "mode": "img2img", "image": "f" * 32})
    assert response.status_code == 404 and "image" in response.json()["detail"]
    assert written_and_queued(api, redis_url) == before


def test_a_place_job_records_its_inputs_and_parameters(api: TestClient, assets: dict[str, str]) -> None:
    placement = {"fit": 0.6, "anchor": "bottom", "offset_x": 10}
    main = {"name": "main", "background": "white", "width": 2000, "height": 2000, "format": "jpeg"}
    body = {"prompt": "a bottle on a marble table", "mode": "place", "image": assets["cutout"], "width": 768}
    response = api.post("/v1/jobs", json={**body, "height": 512, "placement": placement, "renditions": [main]})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["mode"] == "place" and job["parameters"]["mode"] == "place"
    assert job["parameters"]["strength"] == 1.0 and job["parameters"]["mask_grow"] == 0
    assert job["parameters"]["placement"] == {**placement, "offset_y": 0}
    assert job["parameters"]["renditions"][0] == {**main, "quality": 85, "fit": "cover", "fill": 0.85}
    record = api.get(f"/v1/assets/{assets['cutout']}").json()
    assert job["inputs"]["image"]["id"] == assets["cutout"] and job["inputs"]["image"]["sha256"] == record["sha256"]
    assert job["inputs"]["image"]["url"].endswith(f"/v1/assets/{assets['cutout']}/content")
    assert (job["parameters"]["width"], job["parameters"]["height"]) == (768, 512)


def test_img2img_and_inpaint_take_their_images_size(api: TestClient, assets: dict[str, str]) -> None:
    img2img = api.post("/v1/jobs", json={"prompt": "p", "mode": "img2img", "image": assets["photo"]}).json()
    assert (img2img["parameters"]["width"], img2img["parameters"]["height"]) == (320, 256)
    assert img2img["parameters"]["strength"] == 0.6
    body = {"prompt": "p", "mode": "inpaint", "image": assets["photo"], "mask": assets["mask"], "mask_blur": 3}
    inpaint = api.post("/v1/jobs", json={**body, "width": 320, "height": 256}).json()
    assert inpaint["inputs"]["mask"]["id"] == assets["mask"]
    assert inpaint["parameters"]["mask_blur"] == 3 and inpaint["parameters"]["strength"] == 1.0


def test_the_content_hash_tells_photos_apart(api: TestClient, assets: dict[str, str]) -> None:
    other = _asset(api, cutout(colour=(30, 40, 200)))["id"]
    body = {"prompt": "a bottle", "mode": "place", "image": assets["cutout"], "seed": 5, "width": 512, "height": 512}
    first = api.post("/v1/jobs", json=body).json()
    same = api.post("/v1/jobs", json=body).json()
    swapped = api.post("/v1/jobs", json={**body, "image": other}).json()
    stronger = api.post("/v1/jobs", json={**body, "strength": 0.9}).json()
    text = api.post("/v1/jobs", json={"prompt": "a bottle", "seed": 5, "width": 512, "height": 512}).json()
    assert first["content_hash"] == same["content_hash"]
    assert len({first["content_hash"], swapped["content_hash"], stronger["content_hash"], text["content_hash"]}) == 4


def test_a_repeated_idempotency_key_with_another_image_is_a_conflict(api: TestClient, assets: dict[str, str]) -> None:
    body = {"prompt": "a photo", "mode": "img2img", "image": assets["photo"]}
    headers = {"Idempotency-Key": "photo-1"}
    first = api.post("/v1/jobs", json=body, headers=headers)
    replay = api.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == 202 and replay.status_code == 202 and replay.json()["id"] == first.json()["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    changed = api.post("/v1/jobs", json={**body, "strength": 0.3}, headers=headers)
    assert changed.status_code == 409
