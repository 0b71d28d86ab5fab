"""Seeds near 2^63 survive the web page both ways (issue 16, bug 2): JavaScript numbers round past 2^53."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.observe.farm import ObservedFarm
from tests.farm_helpers import wait_for

pytestmark = pytest.mark.e2e
SEED = 9223372036854775801  # 2^63 - 7: as a JavaScript number it would read 9223372036854775808


@pytest.fixture
def page(browser, farm: ObservedFarm):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def test_a_seed_typed_on_the_page_reaches_the_farm_and_shows_exactly(page, farm: ObservedFarm) -> None:  # type: ignore[no-untyped-def]
    # given
    page.goto(farm.url + "/")
    page.fill("#prompt", "a brass desk lamp")
    page.fill("#width", "256")
    page.fill("#height", "256")
    page.fill("#steps", "2")
    page.fill("#seed", str(SEED))
    # when
    page.click("#submit")
    done = page.wait_for_selector("#finished li.job.succeeded:has-text('brass desk lamp')", timeout=90_000)
    # then: the farm rendered that seed, and the page shows its digits, in the list and in the record
    job = httpx.get(f"{farm.url}/v1/jobs/{done.get_attribute('data-id')}").json()
    assert job["parameters"]["seed"] == SEED and job["seeds"] == [SEED] and job["images"][0]["seed"] == SEED
    assert f"seed {SEED}" in done.inner_text()
    done.click()
    page.wait_for_selector("#detail[open]")
    assert _detail_row(page, "Seed") == str(SEED)


def test_a_seed_from_the_api_shows_exactly_in_the_gallery(page, farm: ObservedFarm) -> None:  # type: ignore[no-untyped-def]
    # given: a finished job sent with a large seed through the API
    job = httpx.post(
        f"{farm.url}/v1/jobs",
        json={"prompt": "a linen tote bag", "width": 256, "height": 256, "steps": 2, "seed": SEED - 1},
    ).json()
    wait_for(lambda: httpx.get(f"{farm.url}/v1/jobs/{job['id']}").json()["status"] == "succeeded", 90, "the job")
    # when
    page.goto(farm.url + "/#/gallery")
    page.click(f"#gallery figure[data-id='{job['id']}']")
    page.wait_for_selector("#detail[open]")
    # then
    assert _detail_row(page, "Seed") == str(SEED - 1)


def _detail_row(page, name: str) -> str:  # type: ignore[no-untyped-def]
    script = "(b, n) => [...b.querySelectorAll('tr')].find(r => r.cells[0].textContent === n).cells[1].textContent"
    return page.eval_on_selector("#detail-body", script, name)
