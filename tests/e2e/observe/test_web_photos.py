"""The web page with a product photo, in headless Chromium: pick a file, place it, see the input beside the output."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.observe.farm import ObservedFarm
from tests.image_helpers import cutout

pytestmark = pytest.mark.e2e


@pytest.fixture
def page(browser, farm: ObservedFarm):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def _fill_small(page) -> None:  # type: ignore[no-untyped-def]
    page.fill("#width", "320")
    page.fill("#height", "256")
    page.fill("#steps", "2")


def test_a_picked_cutout_is_placed_and_shown_beside_its_output(
    page, farm: ObservedFarm, tmp_path: Path, screenshots_dir: Path | None
) -> None:  # type: ignore[no-untyped-def]
    photo = tmp_path / "bottle.png"
    cutout().save(photo)
    page.goto(farm.url + "/")
    page.select_option("#mode", "place")
    assert page.is_visible("#image-file") and page.is_visible("#fit") and not page.is_visible("#mask-file")
    page.set_input_files("#image-file", str(photo))
    page.wait_for_function("() => { const i = document.querySelector('#image-preview'); return i.naturalWidth > 0; }")
    page.fill("#prompt", "a glass bottle on a beach at sunset")
    _fill_small(page)
    page.fill("#fit", "0.6")
    page.select_option("#anchor", "bottom")
    page.check("#white_main")
    page.click("#submit")
    done = page.wait_for_selector("#finished li.job.succeeded:has(figure.input)", timeout=90_000)
    job_id = done.get_attribute("data-id")
    page.wait_for_function(
        "id => [...document.querySelectorAll(`#finished li[data-id='${id}'] img`)].every(i => i.naturalWidth > 0)",
        arg=job_id,
    )
    widths = page.eval_on_selector_all(f"#finished li[data-id='{job_id}'] img", "imgs => imgs.map(i => i.naturalWidth)")
    assert widths == [300, 320]  # the input (300x400 cutout) first, then the 320x256 output
    if screenshots_dir is not None:
        page.screenshot(path=str(screenshots_dir / "web-photos.png"))
    done.click()
    dialog = page.wait_for_selector("#detail[open]")
    page.wait_for_function("() => [...document.querySelectorAll('#detail img.large')].every(i => i.naturalWidth > 0)")
    assert len(page.query_selector_all("#detail img.large")) == 2
    text = dialog.inner_text()
    for expected in ("Mode\tplace", "fit 0.6, bottom", "Input image", "main 2000×2000"):
        assert expected in text, f"{expected!r} not in the detail view:\n{text}"
    if screenshots_dir is not None:
        page.screenshot(path=str(screenshots_dir / "web-photos-detail.png"))
    job = httpx.get(f"{farm.url}/v1/jobs/{job_id}").json()
    assert job["mode"] == "place" and job["parameters"]["placement"]["anchor"] == "bottom"
    assert job["inputs"]["image"]["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()


def test_an_opaque_photo_for_place_is_refused_on_the_page(page, farm: ObservedFarm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (320, 256), (120, 130, 140)).save(photo)
    page.goto(farm.url + "/")
    page.select_option("#mode", "place")
    page.set_input_files("#image-file", str(photo))
    page.fill("#prompt", "a shelf")
    _fill_small(page)
    page.click("#submit")
    error = page.wait_for_selector("#submit-error:not([hidden])")
    assert "HTTP 422" in error.inner_text() and "image: place needs a cutout" in error.inner_text()


def test_img2img_sends_no_size_and_renders_at_the_photos_size(page, farm: ObservedFarm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    photo = tmp_path / "room.png"
    Image.effect_noise((272, 256), 50).convert("RGB").save(photo)
    page.goto(farm.url + "/")
    page.select_option("#mode", "img2img")
    assert page.is_disabled("#width") and page.is_disabled("#height")
    page.set_input_files("#image-file", str(photo))
    page.fill("#prompt", "a cosy living room")
    page.fill("#steps", "2")
    page.fill("#strength", "0.5")
    page.click("#submit")
    done = page.wait_for_selector("#finished li.job.succeeded:has(figure.input)", timeout=90_000)
    job = httpx.get(f"{farm.url}/v1/jobs/{done.get_attribute('data-id')}").json()
    assert (job["parameters"]["width"], job["parameters"]["height"], job["parameters"]["strength"]) == (272, 256, 0.5)
