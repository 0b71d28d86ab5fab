"""A committed job whose message never reached Redis is sent by the reconciler."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import redis
from celery import Celery

from broker_config.celery_app import app as celery_app
from control.enqueue import Enqueuer
from control.reconciler import Reconciler
from core.settings import get_settings
from migrations.runner import upgrade
from models import Job, make_engine, make_session_factory
from models.base import utcnow
from models.db import transaction


def test_job_left_unsent_while_broker_was_down_is_resent(tmp_path: Path, redis_url: str) -> None:
    # given: a job committed while the broker was unreachable
    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    queue = get_settings().queue
    dead_broker = Celery("down", broker="redis://127.0.0.1:1/0")
    with transaction(sessions) as s:
        job = Job(
            prompt="p",
            width=256,
            height=256,
            steps=1,
            guidance_scale=0,
            seed=1,
            num_images=1,
            created_at=utcnow() - timedelta(seconds=30),
        )
        s.add(job)
    assert Enqueuer(dead_broker, sessions, queue).send([job.id]) == []
    r = redis.Redis.from_url(redis_url)
    before = r.llen(queue)
    # when
    reconciler = Reconciler(sessions, Enqueuer(celery_app, sessions, queue), redis_url)
    resent = reconciler.resend_unsent()
    # then
    assert resent == 1
    assert r.llen(queue) == before + 1
    with sessions() as s:
        assert s.get(Job, job.id).enqueued_at is not None
    assert reconciler.resend_unsent() == 0
    r.delete(queue)
