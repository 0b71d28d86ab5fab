"""Batches with images: an `images` zip beside the catalog, `image`/`mask` columns naming its files or asset ids,
batch-level mode settings with per-row overrides. Refusals name row and column and store nothing at all."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from models import Asset, Job
from tests.api.batch_helpers import batch_api, written_and_queued
from tests.image_helpers import cutout, encoded, raw_png


@pytest.fixture
def api(database_url: str, tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    with batch_api(database_url, tmp_path, redis_url, max_asset_pixels=2000 * 2000) as client:
        yield client


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _csv(rows: list[dict[str, Any]]) -> bytes:
    columns = list(dict.fromkeys(c for r in rows for c in r))
    lines = [",".join(columns)] + [",".join(str(r.get(c, "")) for c in columns) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def _post(api: TestClient, rows: list[dict[str, Any]], images: bytes | None, **fields: Any) -> Any:
    files: dict[str, Any] = {"file": ("catalog.csv", _csv(rows), "text/csv")}
    if images is not None:
        files["images"] = ("photos.zip", images, "application/zip")
    form = {
        "template": "{product} on a wooden table",
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()},
    }
    return api.post("/v1/batches", data=form, files=files)


def _stored(api: TestClient, redis_url: str) -> tuple[Any, ...]:
    """Batches, jobs and queued ids, asset rows and files under assets/: a refusal leaves all of them as they were."""
    with api.app.state.sessions() as s:
        assets = int(s.scalar(select(func.count()).select_from(Asset)) or 0)
    root = Path(api.app.state.storage.root) / "assets"
    files = sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0
    return (*written_and_queued(api, redis_url), assets, files)


PHOTOS = {
    "bottle.png": encoded(cutout(box=(100, 40, 200, 380))),
    "mug.png": encoded(cutout(colour=(30, 90, 200))),
    "box.webp": encoded(cutout(size=(320, 320), box=(40, 60, 280, 280)), "WEBP", lossless=True),
    "photo.png": encoded(Image.effect_noise((320, 256), 40).convert("RGB")),
    "mask.png": encoded(Image.new("L", (320, 256), 0)),
}


def test_a_catalog_with_an_images_zip_becomes_image_jobs(api: TestClient) -> None:
    # given: one asset uploaded before, referenced by id
    earlier = api.post("/v1/assets", files={"file": ("b.png", PHOTOS["bottle.png"], "image/png")}).json()
    rows = [
        {"sku": "B-1", "product": "a bottle", "image": "bottle.png"},
        {"sku": "M-1", "product": "a mug", "image": "sub/mug.png", "placement_fit": 0.5, "placement_anchor": "bottom"},
        {"sku": "X-1", "product": "a box", "image": "box.webp", "strength": 0.8},
        {"sku": "P-1", "product": "a shelf", "image": "photo.png", "mode": "inpaint", "mask": "mask.png"},
        {"sku": "B-2", "product": "a bottle again", "image": earlier["id"]},
    ]
    zipped = _zip(
        {
            "bottle.png": PHOTOS["bottle.png"],
            "sub/mug.png": PHOTOS["mug.png"],
            **{k: PHOTOS[k] for k in ("box.webp", "photo.png", "mask.png")},
        }
    )
    # when
    response = _post(api, rows, zipped, mode="place", placement={"fit": 0.7}, defaults={"width": 512, "height": 512})
    # then
    assert response.status_code == 202, response.text
    with api.app.state.sessions() as s:
        jobs = {j.item_key: j for j in s.scalars(select(Job))}
        assets = list(s.scalars(select(Asset)))
    assert len(assets) == 5  # bottle (once: the zip's copy is the uploaded asset), mug, box, photo, mask
    assert jobs["B-1"].image_asset_id == earlier["id"] == jobs["B-2"].image_asset_id
    assert jobs["M-1"].mode == "place" and jobs["M-1"].mode_parameters["placement"]["fit"] == 0.5
    assert jobs["M-1"].mode_parameters["placement"]["anchor"] == "bottom"
    assert jobs["B-1"].mode_parameters == {
        "strength": 1.0,
        "mask_grow": 0,
        "placement": {"fit": 0.7, "anchor": "center", "offset_x": 0, "offset_y": 0},
    }
    assert jobs["X-1"].mode_parameters["strength"] == 0.8
    assert (jobs["P-1"].mode, jobs["P-1"].width, jobs["P-1"].height) == ("inpaint", 320, 256)
    assert jobs["P-1"].mask_asset_id is not None
    assert len({j.content_hash for j in jobs.values()}) == 5
    for asset in assets:
        assert api.get(f"/v1/assets/{asset.id}/content").status_code == 200


def test_a_text_batch_keeps_an_image_column_as_plain_data(api: TestClient) -> None:
    rows = [{"sku": "A", "product": "a lamp", "image": "https://shop.example/lamp.jpg"}]
    response = _post(api, rows, None, template="{product} (see {image})")
    assert response.status_code == 202, response.text


REFUSALS = [
    # (rows, zip files, batch fields, (row, column or field), rule words)
    ([{"image": "nope.png"}], {}, {}, (1, "image"), "no file by this name in the images zip"),
    ([{"image": "notes.png"}], {"notes.png": b"<html>hi</html>"}, {}, (1, "image"), "not a PNG, JPEG or WebP"),
    ([{"image": "photo.png"}], {"photo.png": PHOTOS["photo.png"]}, {}, (1, "image"), "place needs a cutout"),
    (
        [{"image": "photo.png", "mode": "inpaint", "mask": "small.png"}],
        {"photo.png": PHOTOS["photo.png"], "small.png": encoded(Image.new("L", (64, 64)))},
        {},
        (1, "mask"),
        "must be the size of its image, 320x256",
    ),
    ([{"image": "huge.png"}], {"huge.png": raw_png(3000, 3000)}, {}, (1, "image"), "declares 3000x3000"),
    ([{"image": "https://cdn.example/b.png"}], {}, {}, (1, "image"), "URLs are not fetched"),
    (
        [{"image": "bottle.png", "placement_fit": 1.5}],
        {"bottle.png": PHOTOS["bottle.png"]},
        {},
        (1, "placement_fit"),
        "less than or equal to 1",
    ),
    (
        [{"image": "bottle.png", "strength": "lots"}],
        {"bottle.png": PHOTOS["bottle.png"]},
        {},
        (1, "strength"),
        "must be a number",
    ),
    (
        [{"image": "bottle.png", "mode": "sketch"}],
        {"bottle.png": PHOTOS["bottle.png"]},
        {},
        (1, "mode"),
        "must be one of text",
    ),
    (
        [{"image": "bottle.png", "placement_offset_x": 900}],
        {"bottle.png": PHOTOS["bottle.png"]},
        {},
        (1, "placement_offset_x"),
        "off the",
    ),
    (
        [{"image": "bottle.png"}],
        {"bottle.png": PHOTOS["bottle.png"]},
        {"placement": {"fit": 0}},
        (None, "placement.fit"),
        "greater than 0",
    ),
    (
        [{"image": "a.png"}],
        {"a.png": PHOTOS["bottle.png"], "x/a.png": PHOTOS["mug.png"], "y/a.png": PHOTOS["mug.png"]},
        {},
        (1, "image"),
        None,
    ),
]


@pytest.mark.parametrize(("cells", "files", "fields", "where", "rule"), REFUSALS)
def test_bad_image_rows_are_refused_naming_row_and_column_and_nothing_is_stored(
    api: TestClient, redis_url: str, cells: list, files: dict, fields: dict, where: tuple, rule: str | None
) -> None:
    rows = [{"sku": "OK-1", "product": "fine", "image": "good.png"}] + [
        {"sku": f"R-{i}", "product": "thing", **c} for i, c in enumerate(cells)
    ]
    before = _stored(api, redis_url)
    response = _post(api, rows, _zip({"good.png": PHOTOS["mug.png"], **files}), mode="place", **fields)
    if rule is None:  # an exact name among same-named files is fine: only a bare name is ambiguous
        assert response.status_code == 202, response.text
        return
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    row, name = where
    matching = [
        p for p in detail if name in (p.get("column"), p["field"]) and p.get("row") == (row + 1 if row else None)
    ]
    assert matching, detail
    assert rule in matching[0]["rule"], matching[0]
    assert _stored(api, redis_url) == before


def test_an_ambiguous_file_name_is_refused(api: TestClient, redis_url: str) -> None:
    rows = [{"sku": "A", "product": "p", "image": "a.png"}]
    zipped = _zip({"x/a.png": PHOTOS["bottle.png"], "y/a.png": PHOTOS["mug.png"]})
    response = _post(api, rows, zipped, mode="place")
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert (problem["row"], problem["column"]) == (1, "image") and "names 2 files" in problem["rule"]


def test_every_bad_row_is_reported_at_once(api: TestClient, redis_url: str) -> None:
    rows = [{"sku": f"S-{i}", "product": "p", "image": f"missing-{i}.png"} for i in range(3)]
    response = _post(api, rows, _zip({"other.png": PHOTOS["mug.png"]}), mode="place")
    assert response.status_code == 422
    assert [(p["row"], p["column"]) for p in response.json()["detail"]] == [(1, "image"), (2, "image"), (3, "image")]


@pytest.mark.parametrize(
    ("images", "fields", "rule"),
    [
        (b"this is not a zip", {"mode": "place"}, "must be a zip file"),
        (_zip({"a.png": PHOTOS["mug.png"]}), {}, "every row here is text"),
    ],
)
def test_a_bad_images_part_is_refused(api: TestClient, redis_url: str, images: bytes, fields: dict, rule: str) -> None:
    before = _stored(api, redis_url)
    response = _post(api, [{"sku": "A", "product": "p", "image": "a.png"}], images, **fields)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["field"] == "images" and rule in problem["rule"]
    assert _stored(api, redis_url) == before
