"""The catalog review board on the web page, in headless Chromium (issue 16, item 6): upload with a preview and
every refusal, the batch list, the contact sheet with approve / reject / re-roll, filters and paging."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.e2e.observe.farm import ObservedFarm
from tests.farm_helpers import wait_for

pytestmark = pytest.mark.e2e
GOOD = (
    "sku,product,width,height,steps\n"
    "LAMP-1,brass desk lamp,256,256,2\nVASE-2,glass vase,256,256,2\nMUG-3,ceramic mug,256,256,2\n"
)
BAD = "sku,product,width\nLAMP-1,brass desk lamp,wide\nLAMP-1,brass floor lamp,256\n"


@pytest.fixture
def page(browser, farm: ObservedFarm):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def _shoot(page, screenshots_dir: Path | None, name: str) -> None:  # type: ignore[no-untyped-def]
    if screenshots_dir is not None:
        page.screenshot(path=str(screenshots_dir / name), full_page=True)


def _upload(page, tmp_path: Path, text: str) -> None:  # type: ignore[no-untyped-def]
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(text)
    page.set_input_files("#review-file", str(catalog))
    page.fill("#review-template", "studio photo of a {product}")
    page.click("#review-preview-button")


def _tile(page, key: str) -> str:  # type: ignore[no-untyped-def]
    return page.get_attribute(f".sku-tile[data-key='{key}']", "class") or ""


def test_upload_preview_review_and_export(
    page, farm: ObservedFarm, tmp_path: Path, screenshots_dir: Path | None
) -> None:  # type: ignore[no-untyped-def]
    page.goto(farm.url + "/#/review")
    page.fill("#review-name", "lamps and vases")
    # a catalog with problems: every refusal is listed, nothing can be submitted
    _upload(page, tmp_path, BAD)
    page.wait_for_selector("#review-refusals li")
    refusals = page.inner_text("#review-refusals")
    assert (
        "row 1 (line 2), column 'width'" in refusals
        and "duplicate keys" in refusals
        and "LAMP-1 (rows 1, 2)" in refusals
    )
    assert page.is_disabled("#review-submit")
    # the fixed catalog: a preview of the rendered prompts, then submit
    _upload(page, tmp_path, GOOD)
    page.wait_for_selector("#review-preview tbody tr")
    assert page.inner_text("#review-summary").startswith("3 rows: 3 to render")
    assert page.inner_text("#review-preview tr[data-key='VASE-2']").startswith(
        "VASE-2\tstudio photo of a glass vase\t256×256"
    )
    _shoot(page, screenshots_dir, "web-review-upload.png")
    page.click("#review-submit")
    page.wait_for_selector("#review-sheet .sku-tile")
    batch_id = page.url.rsplit("/", 1)[1]
    # the contact sheet: every row succeeds and shows its image
    page.wait_for_function(
        "() => document.querySelectorAll('#review-sheet .sku-tile.succeeded img.sku-image').length === 3",
        timeout=90_000,
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('#review-sheet img.sku-image')]"
        ".every(i => i.complete && i.naturalWidth === 256)"
    )
    # approve one, reject one with a note, re-roll one
    page.click(".sku-tile[data-key='LAMP-1'] button.approve")
    page.wait_for_function(
        "() => document.querySelector(\".sku-tile[data-key='LAMP-1']\").classList.contains('review-approved')"
    )
    page.once("dialog", lambda dialog: dialog.accept("glass looks cloudy"))
    page.click(".sku-tile[data-key='VASE-2'] button.reject")
    page.wait_for_selector(".sku-tile[data-key='VASE-2'].review-rejected:has-text('note: glass looks cloudy')")
    first_seed = httpx.get(f"{farm.url}/v1/batches/{batch_id}/items").json()["items"][2]["seed"]
    page.click(".sku-tile[data-key='MUG-3'] button.reroll")
    page.wait_for_selector(".sku-tile[data-key='MUG-3']:has-text('re-rolled 1×')")
    page.wait_for_selector(".sku-tile[data-key='MUG-3'].succeeded img.sku-image", timeout=90_000)
    mug = httpx.get(f"{farm.url}/v1/batches/{batch_id}/items").json()["items"][2]
    assert mug["seed"] != first_seed and mug["rerolls"] == 1 and mug["status"] == "succeeded"
    _shoot(page, screenshots_dir, "web-review-sheet.png")
    # filters: approved only
    page.select_option("#review-filter-approval", "approved")
    page.wait_for_function("() => document.querySelectorAll('#review-sheet .sku-tile').length === 1")
    assert page.get_attribute("#review-sheet .sku-tile", "data-key") == "LAMP-1"
    assert page.inner_text("#review-pager-text") == "Rows 1–1 of 1"
    # the manifest and the archive of approved images say the same
    manifest = list(csv.DictReader(io.StringIO(httpx.get(f"{farm.url}/v1/batches/{batch_id}/manifest.csv").text)))
    assert [(m["key"], m["approved"]) for m in manifest] == [("LAMP-1", "true"), ("VASE-2", "false"), ("MUG-3", "")]
    assert manifest[2]["job_id"] == mug["job_id"]
    with page.expect_download() as download:
        page.click("#review-approved-zip")
    archive = zipfile.ZipFile(download.value.path())
    assert sorted(archive.namelist()) == ["LAMP-1.png", "manifest.csv"]
    # the batch list shows it with its progress
    page.goto(farm.url + "/#/review")
    row = page.wait_for_selector(f"#review-batches tr[data-id='{batch_id}']")
    assert "lamps and vases" in row.inner_text() and "3/3" in row.inner_text() and "succeeded" in row.inner_text()


def test_ten_thousand_rows_page_and_filter(page, farm: ObservedFarm) -> None:  # type: ignore[no-untyped-def]
    rows = [
        {"sku": f"SKU-{i:05d}", "product": f"item {i}", "width": 256, "height": 256, "steps": 1} for i in range(10_000)
    ]
    created = httpx.post(
        f"{farm.url}/v1/batches",
        json={"template": "photo of {product}", "rows": rows, "name": "ten thousand"},
        timeout=120,
    )
    assert created.status_code == 202, created.text
    batch_id = created.json()["id"]
    httpx.delete(f"{farm.url}/v1/batches/{batch_id}")  # the farm's one test worker has better things to do
    page.goto(farm.url + f"/#/review/{batch_id}")
    page.wait_for_selector("#review-sheet .sku-tile")
    assert page.inner_text("#review-pager-text") == "Rows 1–50 of 10000"
    assert page.eval_on_selector_all("#review-sheet .sku-tile", "t => t.length") == 50
    page.click("#review-next")
    page.wait_for_function("() => document.querySelector('#review-pager-text').textContent === 'Rows 51–100 of 10000'")
    assert page.get_attribute("#review-sheet .sku-tile", "data-key") == "SKU-00050"
    page.click("#review-prev")
    page.wait_for_function("() => document.querySelector('#review-pager-text').textContent === 'Rows 1–50 of 10000'")
    canceled = httpx.get(f"{farm.url}/v1/batches/{batch_id}/items", params={"status": "canceled", "limit": 1}).json()
    page.select_option("#review-filter-status", "canceled")
    wait_for(
        lambda: page.inner_text("#review-pager-text").endswith(f"of {canceled['total']}"), 20, "the filtered pager"
    )
    assert canceled["total"] > 9_900
