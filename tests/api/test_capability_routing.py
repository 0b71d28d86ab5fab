"""Routing by card: images over the large budget go to the large queues, which only large cards read; a job no
live card can take waits in SQL (bulk) or its queue (interactive) and says why in `waiting_for`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from core.capability import LARGE_CARD_MIB, takes_large, worker_max_pixels
from core.queues import DEFAULT_LARGE_PIXELS, bulk_queue_name, size_queue, worker_queue_order
from core.settings import FarmSettings
from migrations.runner import upgrade
from models import Job, Worker, make_engine, make_session_factory
from models.db import transaction

SMALL, LARGE = 1024 * 1024, 2048 * 2048


@pytest.fixture
def farm(tmp_path: Path, redis_url: str) -> Iterator[tuple[TestClient, str]]:
    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    upgrade(url)
    queue = f"cap-{uuid.uuid4().hex[:8]}"
    settings = FarmSettings(data_dir=tmp_path, database_url=url, bulk_queue_depth=10, dispatch_every_seconds=0.1)
    with TestClient(create_app(settings, queue=queue)) as client:
        yield client, queue
    r = redis.Redis.from_url(redis_url)
    r.delete(*(k for k in r.scan_iter(match=f"{queue}*")))


def _add_worker(client: TestClient, name: str, max_pixels: int) -> None:
    sessions = make_session_factory(make_engine(client.app.state.settings.resolved_database_url))  # type: ignore[attr-defined]
    with transaction(sessions) as s:
        s.add(
            Worker(
                name=name, hostname="t", pid=1, device="cuda", state="ready", precision="bf16", max_pixels=max_pixels
            )
        )


def _llen(redis_url: str, key: str) -> int:
    return int(redis.Redis.from_url(redis_url).llen(key))


def test_the_card_budget_comes_from_vram_or_the_setting() -> None:
    s = FarmSettings()
    assert s.large_pixels == DEFAULT_LARGE_PIXELS == 1024 * 1024
    assert worker_max_pixels(s, 24 * 1024) == 1024 * 1024  # a 24 GiB card: 21.6 GiB peak at 1024x1024 fits
    assert worker_max_pixels(s, LARGE_CARD_MIB) == s.max_pixels  # 2048x2048 peaks at 28.7 GiB
    assert worker_max_pixels(s, 143_771) == 2048 * 2048  # an H200
    assert worker_max_pixels(s, None) == s.max_pixels  # no GPU: no VRAM bound
    assert worker_max_pixels(FarmSettings(worker_max_pixels=512 * 512), 143_771) == 512 * 512
    assert not takes_large(1024 * 1024, 1024 * 1024) and takes_large(2048 * 2048, 1024 * 1024)


def test_bad_pixel_settings_stop_the_process_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="worker_max_pixels"):
        FarmSettings(worker_max_pixels=100)
    with pytest.raises(ValueError, match="large_pixels"):
        FarmSettings(large_pixels=5000 * 5000)


def test_a_large_card_reads_the_large_queues_first_and_a_small_card_never() -> None:
    assert worker_queue_order("q", "gpu0@h", takes_large=False) == ["q", "q.bulk@gpu0@h", "q.bulk"]
    assert worker_queue_order("q.fp8", "gpu1@h", takes_large=True) == [
        "q.fp8.large",
        "q.fp8",
        "q.fp8.bulk@gpu1@h",
        "q.fp8.large.bulk",
        "q.fp8.bulk",
    ]


def test_a_large_interactive_job_waits_in_the_large_queue_and_says_for_what(
    farm: tuple[TestClient, str], redis_url: str
) -> None:
    client, queue = farm
    _add_worker(client, "small@t", SMALL)
    # when: one job under the budget, one over it
    small = client.post("/v1/jobs", json={"prompt": "a mug", "width": 1024, "height": 1024}).json()
    large = client.post("/v1/jobs", json={"prompt": "a mug", "width": 2048, "height": 1536}).json()
    # then: each in its own queue; only the large one waits, naming its size and the live cards' budget
    assert _llen(redis_url, queue) == 1 and _llen(redis_url, size_queue(queue, True)) == 1
    assert small["waiting_for"] is None
    assert "2048x1536" in large["waiting_for"] and f"at most {SMALL}" in large["waiting_for"]
    # when: a large card comes up, the record stops saying it waits
    _add_worker(client, "big@t", LARGE)
    assert client.get(f"/v1/jobs/{large['id']}").json()["waiting_for"] is None
    workers = {w["name"]: w["max_pixels"] for w in client.get("/v1/workers").json()["workers"]}
    assert workers == {"small@t": SMALL, "big@t": LARGE}


def test_large_batch_rows_stay_in_sql_until_a_large_card_is_live(farm: tuple[TestClient, str], redis_url: str) -> None:
    client, queue = farm
    _add_worker(client, "small@t", SMALL)
    rows = [{"sku": f"s{i}", "product": "mug", "width": 2048 if i < 2 else 1024} for i in range(4)]
    batch = client.post("/v1/batches", json={"template": "a {product}", "rows": rows, "defaults": {"height": 1024}})
    assert batch.status_code == 202, batch.text
    bulk, large_bulk = bulk_queue_name(queue), bulk_queue_name(size_queue(queue, True))
    sessions = make_session_factory(make_engine(client.app.state.settings.resolved_database_url))  # type: ignore[attr-defined]

    def sent() -> dict[int, int]:
        with sessions() as s:
            jobs = s.query(Job.width, Job.enqueued_at).all()
        return {w: sum(1 for width, at in jobs if width == w and at is not None) for w in (1024, 2048)}

    # then: the small card's rows are dispatched; the large ones wait unsent, saying why
    from tests.farm_helpers import wait_for

    wait_for(lambda: sent()[1024] == 2, 10, "the 1024 rows dispatched")
    assert sent()[2048] == 0 and _llen(redis_url, large_bulk) == 0 and _llen(redis_url, bulk) == 2
    jobs = client.get("/v1/jobs", params={"limit": 10}).json()["jobs"]
    waiting = [j["waiting_for"] for j in jobs if j["parameters"]["width"] == 2048]
    assert len(waiting) == 2 and all("2048x1024" in w for w in waiting)
    # when: a large card comes up, they go to the large bulk queue, which only it reads
    _add_worker(client, "big@t", LARGE)
    wait_for(lambda: sent()[2048] == 2, 10, "the 2048 rows dispatched")
    assert _llen(redis_url, large_bulk) == 2 and _llen(redis_url, bulk) == 2
