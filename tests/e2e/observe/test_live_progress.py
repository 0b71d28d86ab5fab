"""Live progress: the worker's steps reach GET /v1/jobs/{id}, its event stream, the client and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.e2e.observe.farm import ObservedFarm
from tests.farm_helpers import REPO
from zfarm.client import AsyncClient, Client

pytestmark = pytest.mark.e2e
# The tiny model denoises 1024x1024 at ~0.06 s a step here: 24 steps last well over a second, so each
# progress value (written every 0.5 s, read every 0.5 s) is seen mid-way; the VAE decode adds ~2 s.
SLOW = {"width": 1024, "height": 1024, "steps": 24, "seed": 5}
STEPS = SLOW["steps"]


def _events(url: str, item_id: str, kind: str = "jobs") -> list[tuple[str, dict]]:
    events, name = [], "message"
    with httpx.stream("GET", f"{url}/v1/{kind}/{item_id}/events", timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
    return events


def test_job_event_stream_shows_rising_steps_then_the_final_record(farm: ObservedFarm) -> None:
    # given
    job = httpx.post(f"{farm.url}/v1/jobs", json={"prompt": "a walnut desk", **SLOW}).json()
    # when
    events = _events(farm.url, job["id"])
    # then: progress events with steps that only go up, mid-way values among them, and one final event
    names = [name for name, _ in events]
    assert names[-1] == "final" and names.count("final") == 1 and set(names[:-1]) == {"progress"}
    steps = [e["progress"]["step"] for name, e in events if e["status"] == "running" and e["progress"]["step"]]
    assert steps == sorted(steps), steps
    assert any(0 < s < STEPS for s in steps), f"no step seen mid-way: {steps}"
    assert {e["progress"]["total"] for _, e in events} == {SLOW["steps"]}
    final = events[-1][1]
    assert final["status"] == "succeeded"
    assert final["progress"] == {"step": STEPS, "total": STEPS, "fraction": 1.0, "phase": "done"}
    assert final == httpx.get(f"{farm.url}/v1/jobs/{job['id']}").json()


def test_event_stream_of_an_unknown_job_is_404(farm: ObservedFarm) -> None:
    response = httpx.get(f"{farm.url}/v1/jobs/{'0' * 32}/events")
    assert response.status_code == 404 and "not found" in response.json()["detail"]


def test_client_wait_reports_steps_from_the_stream(farm: ObservedFarm) -> None:
    seen: list[dict] = []
    with Client(farm.url) as client:
        job = client.submit("a linen tote bag", **SLOW)
        final = client.wait(job["id"], timeout=60, on_update=seen.append, raise_on_failure=True)
    assert final["status"] == "succeeded"
    assert any(u["status"] == "running" and 0 < (u["progress"]["step"] or 0) < STEPS for u in seen), seen
    assert seen[-1] == final


def test_async_client_wait_follows_the_stream_too(farm: ObservedFarm) -> None:
    async def run() -> tuple[dict, list[dict]]:
        seen: list[dict] = []
        async with AsyncClient(farm.url) as client:
            job = await client.submit("a glass carafe", width=256, height=256, steps=4)
            return await client.wait(job["id"], timeout=60, on_update=seen.append), seen

    final, seen = asyncio.run(run())
    assert final["status"] == "succeeded" and seen[-1] == final


def test_wait_times_out_with_the_jobs_status(farm: ObservedFarm) -> None:
    with Client(farm.url) as client:
        job = client.submit("a cork board", **SLOW)
        with pytest.raises(TimeoutError, match=job["id"]):
            client.wait(job["id"], timeout=0.5)
        client.cancel(job["id"])  # a running job stops at its next step
        assert client.wait(job["id"], timeout=60)["status"] == "canceled"


def test_cli_submit_wait_draws_a_step_bar(farm: ObservedFarm) -> None:
    env = {**os.environ, "ZFARM_URL": farm.url}
    args = ["submit", "a brass lamp", "--width", "1024", "--height", "1024", "--steps", str(STEPS), "--wait"]
    done = subprocess.run(
        [sys.executable, "-m", "zfarm.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # tqdm writes to stderr: the bar ends at all steps, and showed a partial count on the way
    assert f"{STEPS}/{STEPS}" in done.stderr, done.stderr
    assert any(f"| {k}/{STEPS}" in done.stderr for k in range(1, STEPS)), done.stderr


def test_batch_event_stream_counts_its_jobs_until_all_have_ended(farm: ObservedFarm) -> None:
    # given: a two-row catalog
    body = {
        "name": "sse catalog",
        "template": "studio photo of a {product}",
        "defaults": {"width": 256, "height": 256, "steps": 2},
        "rows": [{"sku": "CUP-1", "product": "cup"}, {"sku": "BOWL-2", "product": "bowl"}],
    }
    created = httpx.post(f"{farm.url}/v1/batches", json=body)
    assert created.status_code == 202, created.text
    # when
    events = _events(farm.url, created.json()["id"], kind="batches")
    # then: counts that only grow in `done`, ending with both rows succeeded
    names = [name for name, _ in events]
    assert names[-1] == "final" and set(names[:-1]) <= {"progress"}
    done = [e["done"] for _, e in events]
    assert done == sorted(done) and events[-1][1]["total"] == 2
    assert events[-1][1]["counts"] == {"succeeded": 2} and events[-1][1]["progress"] == 1.0
