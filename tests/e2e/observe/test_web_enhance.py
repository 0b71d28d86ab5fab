"""Enhance from the web page: the job renders the enhanced prompt and its record shows what changed (item 5)."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.observe.farm import ObservedFarm

pytestmark = pytest.mark.e2e


def test_enhance_on_the_page_shows_the_prompt_as_sent_and_the_adjustments(browser, farm: ObservedFarm) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(farm.url + "/")
        page.fill("#prompt", "a ceramic teapot")
        page.fill("#width", "256")
        page.fill("#height", "256")
        page.fill("#steps", "2")
        page.check("#enhance")
        page.click("#submit")
        done = page.wait_for_selector("#finished li.job.succeeded:has-text('a ceramic teapot')", timeout=90_000)
        job = httpx.get(f"{farm.url}/v1/jobs/{done.get_attribute('data-id')}").json()
        assert job["requested_prompt"] == "a ceramic teapot"
        assert (
            job["parameters"]["prompt"] == "a ceramic teapot, soft diffused studio lighting, sharp focus, high detail"
        )
        done.click()
        page.wait_for_selector("#detail[open]")
        detail = page.inner_text("#detail-body")
        assert "Prompt as sent\ta ceramic teapot" in detail
        assert "enhance: added 'soft diffused studio lighting, sharp focus, high detail'" in detail
    finally:
        context.close()
    assert errors == []
