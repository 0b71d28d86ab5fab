"""The web page at `/`, driven in headless Chromium: API key, submit, live progress, gallery, workers, batch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.e2e.observe.farm import ObservedFarm
from tests.farm_helpers import wait_for

pytestmark = pytest.mark.e2e
# 768x768 on the tiny model: the steps take ~0.4 s and the decode ~1.2 s after them, so the page shows the
# bar with a step count while the job runs (the mid-way values themselves are checked in test_live_progress).
STEPS = 16


@pytest.fixture
def page(browser, farm: ObservedFarm):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def _shoot(page, screenshots_dir: Path | None, name: str) -> None:  # type: ignore[no-untyped-def]
    if screenshots_dir is not None:
        page.screenshot(path=str(screenshots_dir / name))


def _use_key(page, key: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#api-key", key)
    page.click("#key-form button")


def test_page_with_api_keys_submits_a_job_shows_live_steps_and_the_image(
    page, farm: ObservedFarm, screenshots_dir: Path | None
) -> None:  # type: ignore[no-untyped-def]
    # given: the farm that requires keys, opened without one
    page.goto(farm.keyed_url + "/")
    page.wait_for_selector("#notice:has-text('needs an API key')")
    _use_key(page, farm.admin_key)
    page.wait_for_selector("#notice", state="hidden")
    # when: a job goes in through the form
    page.fill("#prompt", "studio photo of a ceramic mug on marble, soft light")
    page.fill("#width", "768")
    page.fill("#height", "768")
    page.fill("#steps", str(STEPS))
    page.fill("#seed", "7")
    page.click("#submit")
    # then: its bar moves through the steps while it runs ...
    label = page.wait_for_selector(f"#live .bar-label:has-text('step '):has-text('/{STEPS}')", timeout=60_000)
    seen = label.inner_text()
    _shoot(page, screenshots_dir, "web-submit-live.png")
    assert seen.startswith("step ")
    # ... and it lands in "Just finished" with its image, marked as test-model noise
    done = page.wait_for_selector("#finished li.job.succeeded", timeout=90_000)
    job_id = done.get_attribute("data-id")
    page.wait_for_function(
        "() => { const i = document.querySelector('#finished li.job.succeeded img.thumb');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    assert page.eval_on_selector("#finished li.job.succeeded img.thumb", "i => i.naturalWidth") == 768
    assert "test model: noise" in done.inner_text()
    _shoot(page, screenshots_dir, "web-submit.png")
    job = httpx.get(f"{farm.url}/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["parameters"]["steps"] == STEPS and job["seeds"] == [7]


def test_gallery_shows_a_jobs_record_and_downloads_the_image(
    page, farm: ObservedFarm, screenshots_dir: Path | None
) -> None:  # type: ignore[no-untyped-def]
    # given: a finished job
    job = httpx.post(
        f"{farm.url}/v1/jobs",
        json={"prompt": "a walnut cutting board", "width": 512, "height": 512, "seed": 11, "num_images": 2},
    ).json()
    with httpx.stream("GET", f"{farm.url}/v1/jobs/{job['id']}/events", timeout=60) as events:
        for _ in events.iter_lines():
            pass  # the stream ends when the job does
    # when: the gallery is opened and one of its tiles clicked
    page.goto(farm.url + "/#/gallery")
    tile = page.wait_for_selector(f".tile[data-id='{job['id']}']")
    page.wait_for_function("() => [...document.querySelectorAll('.tile img')].every(i => i.complete)")
    _shoot(page, screenshots_dir, "web-gallery.png")
    tile.click()
    dialog = page.wait_for_selector("#detail[open]")
    page.wait_for_function(
        "() => { const i = document.querySelector('#detail img.large'); return i && i.naturalWidth > 0; }"
    )
    text = dialog.inner_text()
    # then: the record is there: seed, size, timings, worker, and a download of the exact bytes
    for expected in (job["id"], "Seed\t11", "Size\t512×512", "GPU time", farm.worker_name, "noise"):
        assert expected in text, f"{expected!r} not in the detail view:\n{text}"
    _shoot(page, screenshots_dir, "web-detail.png")
    with page.expect_download() as download_info:
        page.click("#detail button.download >> nth=0")
    data = Path(download_info.value.path()).read_bytes()
    final = httpx.get(f"{farm.url}/v1/jobs/{job['id']}").json()
    assert hashlib.sha256(data).hexdigest() == final["images"][0]["sha256"]
    assert download_info.value.suggested_filename == f"{job['id']}_0.png"


def test_workers_view_lists_the_worker_with_its_state(page, farm: ObservedFarm, screenshots_dir: Path | None) -> None:  # type: ignore[no-untyped-def]
    page.goto(farm.url + "/#/workers")
    row = page.wait_for_selector(f"#workers tr[data-name='{farm.worker_name}']")
    assert row.query_selector("td.state").inner_text() in ("ready", "busy")
    assert "cpu" in row.inner_text() and "full" in row.inner_text()
    _shoot(page, screenshots_dir, "web-workers.png")


def test_batch_view_shows_per_sku_status_and_export_links(
    page, farm: ObservedFarm, screenshots_dir: Path | None
) -> None:  # type: ignore[no-untyped-def]
    body = {
        "name": "e2e catalog",
        "template": "studio photo of a {product}",
        "defaults": {"width": 256, "height": 256, "steps": 2},
        "rows": [{"sku": "MUG-1", "product": "mug"}, {"sku": "VASE-2", "product": "vase"}],
        "renditions": [{"name": "thumb", "width": 128, "height": 128}],
    }
    created = httpx.post(f"{farm.url}/v1/batches", json=body)
    assert created.status_code == 202, created.text
    batch_id = created.json()["id"]
    page.goto(f"{farm.url}/#/batches/{batch_id}")
    for sku in ("MUG-1", "VASE-2"):
        page.wait_for_selector(f"#batch-items tr[data-key='{sku}'] .status.succeeded", timeout=60_000)
    assert page.is_visible("#manifest-link") and page.is_visible("#archive-link")
    # one row per SKU: its rendition is named beside the image, not listed as a second row
    assert len(page.query_selector_all("#batch-items tbody tr")) == 2
    assert page.inner_text("#batch-items tr[data-key='MUG-1']").count("MUG-1.png + thumb/MUG-1.webp") == 1
    _shoot(page, screenshots_dir, "web-batch.png")


def test_page_picks_lora_adapters_and_their_scales_for_a_job(
    page, farm: ObservedFarm, tmp_path: Path, screenshots_dir: Path | None
) -> None:  # type: ignore[no-untyped-def]
    import uuid

    from tests.lora_helpers import make_tiny_lora

    # given: an adapter uploaded to the farm
    name = f"brand-{uuid.uuid4().hex[:6]}"
    path = make_tiny_lora(tmp_path / "brand.safetensors", seed=9)
    uploaded = httpx.post(
        f"{farm.url}/v1/loras",
        files={"file": (path.name, path.read_bytes())},
        data={"name": name, "default_scale": "0.7", "trigger_words": "brandx"},
    )
    assert uploaded.status_code == 201, uploaded.text
    # when: the form picks it with a scale, and the trigger words
    page.goto(farm.url + "/")
    page.wait_for_selector(f"#loras .lora-name option[value='{name}']", state="attached")
    page.select_option("#loras .lora:nth-child(1) .lora-name", name)
    page.fill("#loras .lora:nth-child(1) .lora-scale", "0.8")
    page.check("#add_trigger_words")
    page.fill("#prompt", "studio photo of a linen apron")
    for field, value in (("#width", "256"), ("#height", "256"), ("#steps", "2")):
        page.fill(field, value)
    _shoot(page, screenshots_dir, "web-submit-loras.png")
    page.click("#submit")
    done = page.wait_for_selector("#finished li.job.succeeded", timeout=90_000)
    # then: the job renders with that adapter, at that scale, with its trigger words
    job = httpx.get(f"{farm.url}/v1/jobs/{done.get_attribute('data-id')}").json()
    assert job["loras"] == [{"name": name, "scale": 0.8, "sha256": uploaded.json()["sha256"]}]
    assert job["parameters"]["add_trigger_words"] is True

    # the workers view says which worker holds it (whether it is still "in slot" depends on the next job: with
    # merged adapters a job without any restores the base weights, and this session's farm runs other tests' jobs)
    # The API first, so that a failure says whether the worker's row or the page is wrong (the row is written
    # at the switch and again by each heartbeat).
    def held() -> list[str]:
        rows = httpx.get(f"{farm.url}/v1/workers").json()["workers"]
        return [a["name"] for w in rows for a in w["adapters"] or []]

    try:
        wait_for(lambda: name in held(), 60, f"a worker row listing {name}")
    except AssertionError as exc:
        log = (farm.data_dir / "worker.log").read_text(errors="replace")[-4000:]
        raise AssertionError(f"{exc}; rows hold {held()}; worker log tail:\n{log}") from None
    page.goto(farm.url + "/#/workers")
    page.wait_for_selector(f"#workers td.adapters:has-text('{name}')", timeout=60_000)
    _shoot(page, screenshots_dir, "web-workers-adapters.png")
