"""Flower behind basic auth, seen in headless Chromium: the worker by name, and its tasks by job id."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.observe.farm import FLOWER_AUTH, ObservedFarm
from tests.farm_helpers import wait_for

pytestmark = pytest.mark.e2e


def _flower_up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 401
    except httpx.TransportError:
        return False


def test_flower_needs_basic_auth_and_lists_the_worker_and_its_job_ids(
    browser, farm: ObservedFarm, screenshots_dir: Path | None
) -> None:  # type: ignore[no-untyped-def]
    # given: Flower answers (401 without credentials) and the worker ran a job
    wait_for(lambda: _flower_up(farm.flower_url), 60, "flower")
    job = httpx.post(f"{farm.url}/v1/jobs", json={"prompt": "a wool scarf", "width": 256, "height": 256})
    job_id = job.json()["id"]
    wait_for(lambda: httpx.get(f"{farm.url}/v1/jobs/{job_id}").json()["status"] == "succeeded", 60, "job")
    wrong = httpx.get(farm.flower_url + "/workers", auth=(FLOWER_AUTH[0], "wrong"))
    assert wrong.status_code == 401
    # when: the browser logs in with the credentials
    context = browser.new_context(
        viewport={"width": 1280, "height": 720},
        http_credentials={"username": FLOWER_AUTH[0], "password": FLOWER_AUTH[1]},
    )
    page = context.new_page()
    try:
        page.goto(farm.flower_url + "/workers")
        # then: the worker is listed by its name (Flower learns of it from Celery's events and replies)
        page.wait_for_selector(f"text={farm.worker_name}", timeout=30_000)
        if screenshots_dir is not None:
            page.screenshot(path=str(screenshots_dir / "flower-workers.png"))
        # and its task carries the job id only (the task list shows Celery's ids; the task page its args)
        task_id = wait_for(lambda: _task_of(farm.flower_url, job_id), 30, f"flower to see job {job_id}")
        page.goto(f"{farm.flower_url}/task/{task_id}")
        page.wait_for_selector(f"text={job_id}", timeout=30_000)
        page.wait_for_selector(f"text={farm.worker_name}")
        if screenshots_dir is not None:
            page.screenshot(path=str(screenshots_dir / "flower-task.png"))
    finally:
        context.close()


def _task_of(flower_url: str, job_id: str) -> str | None:
    tasks = httpx.get(f"{flower_url}/api/tasks", auth=FLOWER_AUTH, params={"limit": 1000}).json()
    return next((uuid for uuid, t in tasks.items() if t.get("args") == repr([job_id])), None)
