"""The FP8 tier's routing: a job asks for a precision, waits in that tier's queue, and says when no worker runs it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from api.job_identity import content_hash
from core.queues import bulk_queue_name, precision_queue
from core.settings import FarmSettings, get_settings
from migrations.runner import upgrade
from models import Worker, make_engine, make_session_factory
from models.base import utcnow
from models.db import transaction
from models.workers import live_precisions


@pytest.fixture
def api(tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    upgrade(url)
    queue = get_settings().queue
    r = redis.Redis.from_url(redis_url)
    r.delete(queue, precision_queue(queue, "fp8"))
    with TestClient(create_app(FarmSettings(data_dir=tmp_path, database_url=url))) as client:
        yield client
    r.delete(queue, precision_queue(queue, "fp8"))


def _queued_ids(redis_url: str, queue: str) -> int:
    return int(redis.Redis.from_url(redis_url).llen(queue))


def test_an_fp8_job_goes_to_the_fp8_queue_and_says_it_waits_for_an_fp8_worker(api: TestClient, redis_url: str) -> None:
    # given: a live bf16 worker and no fp8 worker
    queue = get_settings().queue
    sessions = make_session_factory(make_engine(api.app.state.settings.resolved_database_url))
    with transaction(sessions) as s:
        s.add(Worker(name="gpu0@t", hostname="t", pid=1, device="cuda", state="ready", precision="bf16"))
    # when: one job of each tier
    fp8 = api.post("/v1/jobs", json={"prompt": "a mug", "seed": 1, "precision": "fp8"}).json()
    bf16 = api.post("/v1/jobs", json={"prompt": "a mug", "seed": 1}).json()
    # then: each id is in its own tier's queue, and only the fp8 job waits for a worker that is not there
    assert _queued_ids(redis_url, precision_queue(queue, "fp8")) == 1
    assert _queued_ids(redis_url, queue) == 1
    assert fp8["precision"] == "fp8" and "fp8" in fp8["waiting_for"]
    assert bf16["precision"] == "bf16" and bf16["waiting_for"] is None
    # and an fp8 image never dedups against a bf16 one
    assert fp8["content_hash"] != bf16["content_hash"]
    # when: an fp8 worker comes up, the record stops saying it waits
    with transaction(sessions) as s:
        s.add(Worker(name="gpu1@t", hostname="t", pid=2, device="cuda", state="ready", precision="fp8"))
    assert api.get(f"/v1/jobs/{fp8['id']}").json()["waiting_for"] is None
    workers = {w["name"]: w["precision"] for w in api.get("/v1/workers").json()["workers"]}
    assert workers == {"gpu0@t": "bf16", "gpu1@t": "fp8"}


def test_an_unknown_precision_is_refused_naming_the_field(api: TestClient, redis_url: str) -> None:
    response = api.post("/v1/jobs", json={"prompt": "a mug", "precision": "int4"})
    assert response.status_code == 422
    assert "precision" in response.text and "int4" in response.text
    assert _queued_ids(redis_url, get_settings().queue) == 0


def test_tier_queue_names_keep_bf16_on_the_plain_names() -> None:
    assert precision_queue("render", "bf16") == "render"
    assert bulk_queue_name(precision_queue("render", "fp8")) == "render.fp8.bulk"
    assert FarmSettings(precision="fp8", queue="q").worker_queues == ("q.fp8", "q.fp8.bulk")
    assert FarmSettings(queue="q").worker_queues == ("q", "q.bulk")


def test_content_hash_counts_the_precision() -> None:
    params = {
        "prompt": "p",
        "width": 1024,
        "height": 1024,
        "steps": 8,
        "guidance_scale": 0.0,
        "seed": 1,
        "num_images": 1,
        "output_format": "png",
        "quality": 95,
    }
    assert content_hash(params, "m", None) == content_hash({**params, "precision": "bf16"}, "m", None)
    assert content_hash(params, "m", None) != content_hash({**params, "precision": "fp8"}, "m", None)


def test_worker_heartbeat_decides_which_tiers_are_live(api: TestClient) -> None:
    sessions = make_session_factory(make_engine(api.app.state.settings.resolved_database_url))
    with transaction(sessions) as s:
        stale = utcnow() - timedelta(seconds=600)
        s.add(
            Worker(
                name="old@t", hostname="t", pid=1, device="cuda", state="ready", precision="fp8", last_heartbeat=stale
            )
        )
        s.add(Worker(name="new@t", hostname="t", pid=2, device="cuda", state="ready", precision=None))
    with sessions() as s:
        assert live_precisions(s, 30) == {"bf16"}
