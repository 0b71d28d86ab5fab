"""Webhooks without the farm around them: validation, signing, the sweep's hand-over, one attempt at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.webhook_sweep import send_due_webhooks
from broker_config.celery_app import app as celery_app
from migrations.runner import upgrade
from models import DeliveryState, Job, JobStatus, WebhookDelivery, make_engine, make_session_factory
from models.base import utcnow
from tests.http_servers import Receiver, webhook_receiver
from worker.webhooks import backoff_seconds, deliver_once
from zfarm.redis_server import free_port
from zfarm.settings import FarmSettings
from zfarm.webhook_signing import SignatureError, sign, verify

SECRET = "unit-test-secret-0123456789"


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as r:
        yield r


def _job(sessions: sessionmaker[Session], url: str, status: str, state: str, finished_ago: float = 60) -> str:
    with sessions() as s:
        job = Job(prompt="p", width=256, height=256, steps=2, guidance_scale=0.0, seed=1, status=status)
        if status != JobStatus.QUEUED:
            job.finished_at = utcnow() - timedelta(seconds=finished_ago)
        job.webhook = WebhookDelivery(url=url, state=state)
        s.add(job)
        s.commit()
        return job.id


def _delivery(sessions: sessionmaker[Session], job_id: str) -> WebhookDelivery:
    with sessions() as s:
        return s.scalar(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id))


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://example.com/hook", "URL scheme should be 'http' or 'https'"),
        ("file:///etc/passwd", "URL scheme should be 'http' or 'https'"),
        ("not a url", "Input should be a valid URL, relative URL without a base"),
    ],
)
def test_callback_url_other_than_http_is_refused_naming_field_value_rule(tmp_path: Path, url: str, rule: str) -> None:
    db = f"sqlite:///{tmp_path / 'z.db'}"
    upgrade(db)
    with TestClient(create_app(FarmSettings(data_dir=tmp_path, database_url=db, webhook_secret=SECRET))) as api:
        response = api.post("/v1/jobs", json={"prompt": "a mug", "callback_url": url})
        with api.app.state.sessions() as s:
            rows = s.scalar(select(func.count()).select_from(Job))
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert (detail["field"], detail["value"], detail["rule"]) == ("callback_url", url, rule)
    assert rows == 0


def test_callback_url_is_refused_when_the_farm_has_no_secret_to_sign_with(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'z.db'}"
    upgrade(db)
    with TestClient(create_app(FarmSettings(data_dir=tmp_path, database_url=db, webhook_secret=None))) as api:
        response = api.post("/v1/jobs", json={"prompt": "a mug", "callback_url": "https://example.com/hook"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["rule"] == "this farm has no ZFARM_WEBHOOK_SECRET to sign webhooks"


def test_signature_covers_body_and_time() -> None:
    body = b'{"a":1}'
    header = sign(SECRET, body, timestamp=1_000_000)
    verify(SECRET, header, body, now=1_000_010)
    for bad_body, now, reason in (
        (b'{"a":2}', 1_000_010, "does not match"),
        (body, 1_000_000 + 301, "away from now"),
    ):
        with pytest.raises(SignatureError, match=reason):
            verify(SECRET, header, bad_body, now=now)
    with pytest.raises(SignatureError, match="malformed"):
        verify(SECRET, "v1=abc", body)


def test_backoff_doubles_from_the_base_and_is_capped() -> None:
    assert [backoff_seconds(n, 2.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff_seconds(20, 2.0) == 600.0


def test_sweep_hands_over_each_finished_delivery_once(sessions: sessionmaker[Session], redis_url: str) -> None:
    # given: one finished job and one still queued, both with a webhook waiting
    finished = _job(sessions, "http://127.0.0.1:9/h", JobStatus.FAILED, DeliveryState.WAITING)
    queued = _job(sessions, "http://127.0.0.1:9/h", JobStatus.QUEUED, DeliveryState.WAITING)
    queue = f"zfarm-test-sweep-{finished[:8]}"
    r = redis.Redis.from_url(redis_url)
    try:
        # when: two sweeps, as two API replicas would run them
        sent = send_due_webhooks(sessions, celery_app, queue) + send_due_webhooks(sessions, celery_app, queue)
        # then: one message, for the finished job only
        messages = r.lrange(queue, 0, -1)
        assert sent == 1 and len(messages) == 1
        assert json.loads(messages[0])["headers"]["argsrepr"] == repr([finished])
        assert _delivery(sessions, finished).state == DeliveryState.PENDING
        assert _delivery(sessions, queued).state == DeliveryState.WAITING
    finally:
        r.delete(queue)


def test_delivery_gives_up_after_the_last_attempt_with_the_reason(
    sessions: sessionmaker[Session], receiver: Receiver, tmp_path: Path
) -> None:
    # given: a receiver that always answers 500, and two attempts allowed
    url = receiver.fail_first("/down", 500, 500, 500)
    job_id = _job(sessions, url, JobStatus.SUCCEEDED, DeliveryState.PENDING)
    settings = FarmSettings(data_dir=tmp_path, webhook_secret=SECRET, webhook_max_attempts=2)
    # when
    first = deliver_once(job_id, sessions, settings)
    second = deliver_once(job_id, sessions, settings)
    third = deliver_once(job_id, sessions, settings)
    # then
    assert (first.state, first.retry_in) == (DeliveryState.PENDING, 2.0)
    assert (second.state, second.retry_in) == (DeliveryState.FAILED, None)
    assert third.state == "skipped" and len(receiver.on("/down")) == 2
    row = _delivery(sessions, job_id)
    assert row.attempts == 2 and row.last_status_code == 500 and row.last_error.startswith("HTTP 500")


def test_unreachable_receiver_is_recorded_as_a_connection_error(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    job_id = _job(sessions, f"http://127.0.0.1:{free_port()}/nobody", JobStatus.SUCCEEDED, DeliveryState.PENDING)
    outcome = deliver_once(job_id, sessions, FarmSettings(data_dir=tmp_path, webhook_secret=SECRET))
    row = _delivery(sessions, job_id)
    assert outcome.state == DeliveryState.PENDING and outcome.retry_in == 2.0
    assert row.last_status_code is None and row.last_error.startswith("ConnectError")
