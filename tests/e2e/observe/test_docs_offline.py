"""/docs renders in a browser that can reach nothing but the farm (issue 16, bug 3)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.e2e.observe.farm import ObservedFarm

pytestmark = pytest.mark.e2e


def test_docs_render_offline_with_the_authorize_button(browser, farm: ObservedFarm) -> None:  # type: ignore[no-untyped-def]
    # given: a browser for which every address but the farm's is unreachable (as on an offline host)
    context = browser.new_context()
    farm_origin = urlsplit(farm.url).netloc
    blocked: list[str] = []

    def only_the_farm(route) -> None:  # type: ignore[no-untyped-def]
        if urlsplit(route.request.url).netloc == farm_origin:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_farm)
    page = context.new_page()
    try:
        # when
        page.goto(farm.url + "/docs")
        # then: Swagger UI draws every operation from the farm's schema, with the key button
        page.wait_for_selector(".opblock", timeout=20_000)
        operations = page.eval_on_selector_all(".opblock", "ops => ops.length")
        assert operations >= 20
        assert page.is_visible("button.authorize")
        assert page.locator(".opblock-summary-path", has_text="/v1/jobs").count() >= 2
    finally:
        context.close()
    assert blocked == [], f"/docs tried to reach outside the farm: {blocked}"
