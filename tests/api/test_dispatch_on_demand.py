"""The bulk dispatcher refills on demand: a worker taking a bulk id rings, and the round runs at once (real Redis, SQL).

The timer is set to a minute in these tests, so anything that happens within seconds happened because of a ring.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from broker_config import bulk_signal
from broker_config.celery_app import make_celery
from control.broker_inspect import _job_id
from control.dispatcher import Dispatcher, DispatcherThread
from control.enqueue import Enqueuer
from migrations.runner import upgrade
from models import Batch, Job, JobStatus, Lane, make_engine, make_session_factory
from tests.farm_helpers import wait_for
from worker.bulk_taken import bulk_tier_of

TIMER = 60.0
Farm = tuple[sessionmaker[Session], Dispatcher, redis.Redis]


@pytest.fixture
def farm(tmp_path: Path, redis_url: str) -> Iterator[Farm]:
    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    queue = f"zfarm-test-ondemand-{uuid.uuid4().hex[:8]}"
    dispatcher = Dispatcher(sessions, Enqueuer(make_celery(redis_url), sessions, queue), redis_url, depth=2)
    r = redis.Redis.from_url(redis_url)
    yield sessions, dispatcher, r
    r.delete(bulk_signal.signal_key(queue), *r.keys(f"{queue}*"))
    dispatcher.close()


def _batch(s: Session, rows: int) -> str:
    batch = Batch(template="{p}", key_column="sku", seed=0, source="json", rows=rows, name="b")
    s.add(batch)
    s.flush()
    for i in range(rows):
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
                status=JobStatus.QUEUED,
            )
        )
    s.commit()
    return batch.id


def _take(r: redis.Redis, queue: str) -> str:
    """What a worker's consumer does: pop the oldest id (Celery pushes left, pops right)."""
    message = r.rpop(queue)
    assert message is not None, f"{queue} is empty"
    job_id = _job_id(message)
    assert job_id
    return job_id


def test_a_worker_taking_a_bulk_id_makes_the_dispatcher_refill_within_a_second(farm: Farm) -> None:
    sessions, dispatcher, r = farm
    with sessions() as s:
        batch_id = _batch(s, 8)
    bulk = dispatcher.queue
    thread = DispatcherThread(dispatcher, every=TIMER)
    thread.start()
    try:
        # given: a batch accepted (the API's wake rings) fills the queue to its depth at once, not at the tick
        thread.wake()
        wait_for(lambda: r.llen(bulk) == 2, 5, "the first round, on the API's ring")
        with sessions() as s:
            rows = dict(s.execute(select(Job.id, Job.row_number).where(Job.batch_id == batch_id)).tuples().all())
        taken: list[str] = []
        for _ in range(6):
            # when: a worker takes an id and rings, as worker/bulk_taken.py does in its consumer
            taken.append(_take(r, bulk))
            assert r.llen(bulk) == 1
            started = time.monotonic()
            bulk_signal.ring(r, dispatcher.enqueuer.queue, bulk)
            # then: the place it left is filled long before the minute's tick
            wait_for(lambda: r.llen(bulk) == 2, 3, "the round a ring starts")
            assert time.monotonic() - started < 3
        # the rows went in row order, each once
        taken += [_take(r, bulk), _take(r, bulk)]
        assert [rows[i] for i in taken] == list(range(1, 9))
    finally:
        thread.stop()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_rings_round_waits_until_the_queue_is_half_empty_then_fills_it(farm: Farm) -> None:
    sessions, dispatcher, r = farm
    dispatcher.depth = 6
    with sessions() as s:
        _batch(s, 20)
    bulk = dispatcher.queue
    # given: the queue filled to its depth
    assert dispatcher.top_up() == 6 and r.llen(bulk) == 6
    # when: workers take ids and ring, while more than half the depth is still queued
    for left in (5, 4):
        _take(r, bulk)
        # then: the ring's round sends nothing (fewer, larger rounds: each costs the dispatcher its SQL reading)
        assert dispatcher.top_up(thorough=False) == 0
        assert r.llen(bulk) == left
    # at half the depth the ring's round fills the queue again
    _take(r, bulk)
    assert dispatcher.top_up(thorough=False) == 3 and r.llen(bulk) == 6
    # the timer's round is never skipped: it tops up whatever is missing
    _take(r, bulk)
    assert dispatcher.top_up() == 1 and r.llen(bulk) == 6


def test_rings_that_arrive_during_a_round_wait_for_the_next_call(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    queue = f"zfarm-test-ring-{uuid.uuid4().hex[:8]}"
    try:
        # nothing rang: the wait times out empty-handed
        started = time.monotonic()
        assert bulk_signal.wait(r, queue, 0.2) == set()
        assert 0.15 < time.monotonic() - started < 2
        # several rings before a wait: one wait takes them all, naming each tier once
        for tier in ("q.bulk", "q.fp8.bulk", "q.bulk"):
            bulk_signal.ring(r, queue, tier)
        assert bulk_signal.wait(r, queue, 1) == {"q.bulk", "q.fp8.bulk"}
        # a ring after that wait is kept for the next one (never lost), and the list stays small
        for _ in range(1000):
            bulk_signal.ring(r, queue)
        assert r.llen(bulk_signal.signal_key(queue)) <= 256
        assert bulk_signal.wait(r, queue, 1) == {bulk_signal.ANY_TIER}
        assert r.exists(bulk_signal.signal_key(queue)) == 0
    finally:
        r.delete(bulk_signal.signal_key(queue))


def test_only_bulk_messages_ring() -> None:
    assert bulk_tier_of("render.bulk", "render.bulk") == "render.bulk"
    assert bulk_tier_of("render.bulk@gpu0@host", "render.bulk") == "render.bulk"  # the worker's own queue
    assert bulk_tier_of("render.large.bulk", "render.bulk") == "render.bulk"  # large images: the same tier's round
    assert bulk_tier_of("render.fp8.large.bulk", "render.fp8.bulk") == "render.fp8.bulk"
    assert bulk_tier_of("render.large", "render.bulk") is None  # interactive, large
    assert bulk_tier_of("render", "render.bulk") is None  # interactive
    assert bulk_tier_of("render.bulkier", "render.bulk") is None
    assert bulk_tier_of("", "render.bulk") is None
