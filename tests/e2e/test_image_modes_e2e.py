"""Each image mode through HTTP, real Redis and a real `zfarm worker` process running the tiny pipeline, on
SQLite and PostgreSQL: kept pixels come back exactly in the stored PNG, and the main image is pure white."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from api.app import create_app
from core.imaging.placement import Placement, place_cutout
from tests.farm_helpers import LiveFarm, live_farm, serve_http, wait_for
from tests.image_helpers import cutout, decoded, encoded
from zfarm.cli import main

pytestmark = pytest.mark.e2e
PROMPT = "a product on a marble table, soft light"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def farm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFarm]:
    data = tmp_path_factory.mktemp(f"photos-{request.param}")
    url = f"sqlite:///{data / 'zfarm.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    with live_farm(url, data) as live:
        yield live


def _upload(farm: LiveFarm, image: Image.Image) -> dict[str, Any]:
    response = farm.api.post("/v1/assets", files={"file": ("in.png", encoded(image), "image/png")})
    assert response.status_code in (200, 201), response.text
    return response.json()


def _run(farm: LiveFarm, **body: Any) -> dict[str, Any]:
    created = farm.api.post("/v1/jobs", json={"prompt": PROMPT, "steps": 3, "seed": 11, **body})
    assert created.status_code == 202, created.text
    job = farm.wait_job(created.json()["id"], timeout=120)
    assert job["status"] == "succeeded", job
    return job


def _image(farm: LiveFarm, job: dict[str, Any], index: int = 0, rendition: str | None = None) -> Image.Image:
    path = f"/v1/jobs/{job['id']}/images/{index}" + (f"/renditions/{rendition}" if rendition else "")
    served = farm.api.get(path)
    assert served.status_code == 200, served.text
    return decoded(served.content)


def _stored(farm: LiveFarm, asset: dict[str, Any]) -> Image.Image:
    return decoded(farm.api.get(f"/v1/assets/{asset['id']}/content").content)


def test_inpaint_with_a_mask_keeps_every_masked_out_pixel(farm: LiveFarm) -> None:
    photo = _upload(farm, Image.effect_noise((272, 256), 60).convert("RGB"))
    mask_image = Image.new("L", (272, 256), 0)
    mask_image.paste(255, (40, 40, 200, 180))
    mask = _upload(farm, mask_image)
    job = _run(farm, mode="inpaint", image=photo["id"], mask=mask["id"], mask_blur=4, mask_grow=6, num_images=2)
    original = np.asarray(_stored(farm, photo))
    kept = np.asarray(mask_image) == 0
    for index in (0, 1):
        out = _image(farm, job, index)
        assert out.size == (272, 256)
        assert np.array_equal(np.asarray(out.convert("RGB"))[kept], original[kept])
    params = json.loads(_image(farm, job).info["parameters"])
    assert params["mode"] == "inpaint" and params["test_model_noise"] is True
    assert params["inputs"] == {
        "image": {"id": photo["id"], "sha256": photo["sha256"]},
        "mask": {"id": mask["id"], "sha256": mask["sha256"]},
    }
    assert (params["mask_blur"], params["mask_grow"], params["strength"]) == (4, 6, 1.0)


def test_inpaint_from_alpha_keeps_the_opaque_product(farm: LiveFarm) -> None:
    asset = _upload(farm, cutout(size=(288, 320), box=(60, 40, 230, 290)))
    job = _run(farm, mode="inpaint", image=asset["id"])
    source = np.asarray(_stored(farm, asset))
    opaque = source[..., 3] == 255
    assert np.array_equal(np.asarray(_image(farm, job).convert("RGB"))[opaque], source[..., :3][opaque])


def test_place_keeps_the_product_and_makes_a_white_main_image(farm: LiveFarm) -> None:
    asset = _upload(farm, cutout())
    main = {"name": "main", "background": "white", "fill": 0.85, "width": 600, "height": 600, "format": "png"}
    thumb = {"name": "thumb", "width": 160, "height": 128, "format": "webp"}
    placement = {"fit": 0.7, "anchor": "bottom", "offset_x": -20}
    job = _run(
        farm, mode="place", image=asset["id"], width=320, height=256, placement=placement, renditions=[main, thumb]
    )
    assert job["inputs"]["image"]["sha256"] == asset["sha256"] and job["mode"] == "place"
    out = np.asarray(_image(farm, job).convert("RGB"))
    assert out.shape == (256, 320, 3)
    placed = place_cutout(_stored(farm, asset), (320, 256), Placement(**placement))
    layer = np.asarray(placed.layer)
    opaque = layer[..., 3] == 255
    assert opaque.sum() > 5000
    assert np.array_equal(out[opaque], layer[..., :3][opaque])
    white = np.asarray(_image(farm, job, rendition="main").convert("RGB"))
    assert white.shape == (600, 600, 3)  # larger than the 320x256 render: made from the cutout
    ys, xs = np.nonzero((white != 255).any(axis=2))
    outside = np.ones(white.shape[:2], dtype=bool)
    outside[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = False
    assert (white[outside] == 255).all()
    assert abs((ys.max() + 1 - ys.min()) - 0.85 * 600) <= 1  # the cutout is taller than wide: height limits
    assert _image(farm, job, rendition="thumb").size == (160, 128)


def test_img2img_renders_at_the_images_size_and_strength_sets_the_steps(farm: LiveFarm) -> None:
    # How close to the input each strength stays is tested on the pipeline (tests/worker/test_image_modes.py).
    photo_image = Image.new("RGB", (272, 256), (220, 220, 210))
    photo_image.paste((200, 30, 30), (60, 60, 200, 200))
    photo = _upload(farm, photo_image)
    low = _run(farm, mode="img2img", image=photo["id"], strength=0.2, steps=8)
    high = _run(farm, mode="img2img", image=photo["id"], strength=1.0, steps=8)
    assert _image(farm, low).size == _image(farm, high).size == (272, 256)
    assert low["progress"]["total"] == 2 and high["progress"]["total"] == 8
    assert low["parameters"]["strength"] == 0.2 and low["inputs"]["image"]["id"] == photo["id"]
    assert low["images"][0]["sha256"] != high["images"][0]["sha256"]


def test_the_same_photo_and_parameters_reuse_the_images_and_another_photo_does_not(farm: LiveFarm) -> None:
    first_asset = _upload(farm, cutout(colour=(10, 120, 40)))
    other_asset = _upload(farm, cutout(colour=(10, 40, 120)))
    body = {"mode": "place", "width": 256, "height": 256, "seed": 99}
    first = _run(farm, image=first_asset["id"], **body)
    again = _run(farm, image=first_asset["id"], **body)
    other = _run(farm, image=other_asset["id"], **body)
    assert again["reused_from"] == first["id"]
    assert other["reused_from"] is None
    assert other["images"][0]["sha256"] != first["images"][0]["sha256"]


def test_png_output_is_readable_as_an_ordinary_image(farm: LiveFarm) -> None:
    asset = _upload(farm, cutout())
    job = _run(farm, mode="place", image=asset["id"], width=256, height=256, output_format="webp", quality=90)
    served = farm.api.get(f"/v1/jobs/{job['id']}/images/0")
    assert served.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(served.content)).size == (256, 256)


def test_a_catalog_with_an_images_zip_renders_and_archives_inputs_beside_outputs(farm: LiveFarm) -> None:
    cutouts = {"bottle.png": cutout(box=(110, 40, 190, 380)), "mug.png": cutout(colour=(40, 90, 200))}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, image in cutouts.items():
            zf.writestr(f"photos/{name}", encoded(image))
    catalog = b"sku,product,image,placement_anchor\nB-1,a bottle,bottle.png,bottom\nM-1,a mug,mug.png,\n"
    main = [{"name": "main", "background": "white", "width": 400, "height": 400, "format": "jpeg"}]
    form = {
        "template": "{product} on a kitchen counter",
        "mode": "place",
        "placement": json.dumps({"fit": 0.6}),
        "defaults": json.dumps({"width": 256, "height": 256, "steps": 2}),
        "renditions": json.dumps(main),
    }
    files = {"file": ("catalog.csv", catalog, "text/csv"), "images": ("photos.zip", buf.getvalue(), "application/zip")}
    created = farm.api.post("/v1/batches", data=form, files=files)
    assert created.status_code == 202, created.text
    batch_id = created.json()["id"]
    wait_for(lambda: farm.api.get(f"/v1/batches/{batch_id}").json()["status"] != "active", 180, "the batch")
    assert farm.api.get(f"/v1/batches/{batch_id}").json()["status"] == "succeeded"
    archive = zipfile.ZipFile(io.BytesIO(farm.api.get(f"/v1/batches/{batch_id}/archive.zip").content))
    names = set(archive.namelist())
    assert {"B-1.png", "M-1.png", "main/B-1.jpg", "main/M-1.jpg", "_inputs/B-1.png", "_inputs/M-1.png"} <= names
    for key, name in (("B-1", "bottle.png"), ("M-1", "mug.png")):
        stored_input = np.asarray(decoded(archive.read(f"_inputs/{key}.png")))
        assert np.array_equal(stored_input, np.asarray(cutouts[name]))
        anchor = "bottom" if key == "B-1" else "center"
        placed = place_cutout(cutouts[name], (256, 256), Placement(fit=0.6, anchor=anchor))
        layer = np.asarray(placed.layer)
        opaque = layer[..., 3] == 255
        out = np.asarray(decoded(archive.read(f"{key}.png")).convert("RGB"))
        assert np.array_equal(out[opaque], layer[..., :3][opaque])
    manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    masters = [line for line in manifest if not line["rendition"]]
    assert {line["mode"] for line in masters} == {"place"} and all(line["input_image_sha256"] for line in masters)


def test_the_cli_submits_and_batches_with_images(farm: LiveFarm, tmp_path: Path) -> None:
    cutout().save(tmp_path / "cutout.png")
    photos = tmp_path / "photos"
    photos.mkdir()
    cutout(colour=(200, 150, 20)).save(photos / "lamp.png")
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as zf:
        zf.write(photos / "lamp.png", "lamp.png")
    (tmp_path / "catalog.csv").write_text("sku,product,image\nL1,a lamp,lamp.png\n")
    state = farm.api.app.state
    small = ["--width", "256", "--height", "256", "--steps", "2"]
    with serve_http(create_app(farm.settings, celery=state.celery, queue=state.enqueuer.queue)) as url:
        submitted = CliRunner().invoke(
            main,
            ["submit", "a lamp on a desk", "--image", str(tmp_path / "cutout.png"), "--mode", "place", "--fit", "0.5"]
            + ["--anchor", "bottom", "--rendition", "main=320x320:jpeg:white:fill=0.8", *small, "--wait"]
            + ["-o", str(tmp_path / "out"), "--url", url],
        )
        assert submitted.exit_code == 0, submitted.output
        job_id = submitted.output.split()[0]
        batched = CliRunner().invoke(
            main,
            ["batch", str(tmp_path / "catalog.csv"), "--images", str(tmp_path / "photos.zip"), "--mode", "place"]
            + ["--template", "{product} on a desk", "--set", "width=256", "--set", "height=256", "--set", "steps=2"]
            + ["--wait", "-o", str(tmp_path / "batch"), "--url", url],
        )
        assert batched.exit_code == 0, batched.output
    job = farm.api.get(f"/v1/jobs/{job_id}").json()
    assert job["mode"] == "place" and job["parameters"]["placement"]["anchor"] == "bottom"
    assert job["parameters"]["renditions"][0]["fill"] == 0.8
    assert (tmp_path / "out" / f"{job_id}_0_main.jpg").is_file()
    assert {"L1.png", "_inputs/L1.png", "manifest.csv"} <= {
        str(p.relative_to(tmp_path / "batch")) for p in (tmp_path / "batch").rglob("*") if p.is_file()
    }
