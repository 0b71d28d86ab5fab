"""The bulk dispatcher keeps a batch's LoRA-styled jobs with the workers that hold its adapters (real Redis, SQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from broker_config.celery_app import make_celery
from control.broker_inspect import _job_id
from control.dispatcher import Dispatcher
from control.enqueue import Enqueuer
from core.queues import direct_queue_name
from migrations.runner import upgrade
from models import Batch, Job, JobStatus, Lane, Worker, make_engine, make_session_factory
from models.base import utcnow

BRAND, OTHER = "a" * 64 + "@0.8", "b" * 64 + "@1"


@pytest.fixture
def farm(tmp_path: Path, redis_url: str) -> Iterator[tuple[sessionmaker[Session], Dispatcher, redis.Redis]]:
    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    queue = f"zfarm-test-affinity-{uuid.uuid4().hex[:8]}"
    enqueuer = Enqueuer(make_celery(redis_url), sessions, queue)
    dispatcher = Dispatcher(sessions, enqueuer, redis_url, depth=8, offline_after=30)
    r = redis.Redis.from_url(redis_url)
    yield sessions, dispatcher, r
    for key in r.scan_iter(match=f"{queue}*"):
        r.delete(key)
    dispatcher.close()


def _batch(s: Session, jobs: int, adapters: str | None) -> str:
    batch = Batch(template="{p}", key_column="sku", seed=0, source="json", rows=jobs, name="b")
    s.add(batch)
    s.flush()
    for i in range(jobs):
        s.add(
            Job(
                prompt="p",
                width=256,
                height=256,
                steps=2,
                guidance_scale=0.0,
                seed=i,
                batch_id=batch.id,
                row_number=i + 1,
                lane=Lane.BULK,
                adapters=adapters,
                status=JobStatus.QUEUED,
            )
        )
    return batch.id


def _worker(s: Session, name: str, slot: str | None, beat_ago: float = 0) -> None:
    s.add(
        Worker(
            name=name,
            hostname="h",
            pid=1,
            device="cpu",
            state="ready",
            last_heartbeat=utcnow() - timedelta(seconds=beat_ago),
            adapters={"slot": slot, "held": []},
        )
    )


def _ids(r: redis.Redis, key: str) -> list[str]:
    return [i for i in map(_job_id, r.lrange(key, 0, -1)) if i]


def test_styled_batches_go_to_the_workers_holding_their_adapters_and_the_rest_to_the_shared_queue(farm) -> None:  # type: ignore[no-untyped-def]
    sessions, dispatcher, r = farm
    # given: two workers, each with one brand in its slot, and three batches waiting
    with sessions.begin() as s:
        brand, other, plain = _batch(s, 6, BRAND), _batch(s, 6, OTHER), _batch(s, 6, None)
        _worker(s, "w1@h", BRAND)
        _worker(s, "w2@h", OTHER)
    # when: one round fills the bulk queues eight deep
    assert dispatcher.top_up() == 8
    # then: each worker's own queue holds only its brand's jobs, at most two; the rest wait in the shared queue
    with sessions() as s:
        batch_of = dict(s.execute(select(Job.id, Job.batch_id)).tuples().all())
    bulk = dispatcher.queue
    own = {w: [batch_of[i] for i in _ids(r, direct_queue_name(bulk, w))] for w in ("w1@h", "w2@h")}
    assert own == {"w1@h": [brand, brand], "w2@h": [other, other]}
    shared = [batch_of[i] for i in _ids(r, bulk)]
    assert len(shared) == 4 and plain in shared  # turns still go round all three batches
    # the own queues count toward the depth: a second round sends nothing
    assert dispatcher.top_up() == 0


def test_a_worker_that_goes_offline_has_its_own_queue_sent_again(farm) -> None:  # type: ignore[no-untyped-def]
    sessions, dispatcher, r = farm
    with sessions.begin() as s:
        _batch(s, 4, BRAND)
        _worker(s, "w1@h", BRAND)
    dispatcher.top_up()
    own = _ids(r, direct_queue_name(dispatcher.queue, "w1@h"))
    assert len(own) == 2
    # when: its heartbeat stops
    with sessions.begin() as s:
        worker = s.get(Worker, "w1@h")
        assert worker is not None
        worker.last_heartbeat = utcnow() - timedelta(seconds=120)
    dispatcher.top_up()
    # then: its queue is gone and its ids went out again through the shared queue
    assert r.llen(direct_queue_name(dispatcher.queue, "w1@h")) == 0
    assert set(own) <= set(_ids(r, dispatcher.queue))
