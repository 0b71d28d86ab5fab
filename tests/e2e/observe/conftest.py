"""Fixtures of the observability tests: one farm for the whole package, a headless Chromium per module.

The browser is per module because Playwright's sync API keeps an event loop running in this thread while
it is open (tests that call asyncio.run must not see one); the farm is torn down when the package ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.observe.farm import CHROMIUM_FLAGS, ObservedFarm, chromium_path, observed_farm


@pytest.fixture(scope="package")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedFarm]:
    with observed_farm(tmp_path_factory.mktemp("observed")) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium here: `make test` installs Debian's chromium where apt-get exists; it could not")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def screenshots_dir() -> Path | None:
    """Set ZFARM_SCREENSHOTS=docs/screenshots to keep pictures of the views (make screenshots)."""
    target = os.environ.get("ZFARM_SCREENSHOTS")
    if not target:
        return None
    path = Path(target).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
