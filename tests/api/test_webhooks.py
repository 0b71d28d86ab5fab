"""Webhooks without the farm around them: validation, signing, the sweep's hand-over, one attempt at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from broker_config.celery_app import app as celery_app
from control.webhook_sweep import send_due_webhooks
from core.settings import FarmSettings
from migrations.runner import upgrade
from models import Batch, DeliveryState, Job, JobStatus, WebhookDelivery
from models.base import utcnow
from models.deliveries import reopen_batch_delivery, take_due
from tests.http_servers import Receiver, webhook_receiver
from worker.webhooks import backoff_seconds, deliver_once
from zfarm.launcher.redis_server import free_port
from zfarm.webhook_signing import SIGNATURE_HEADER, SignatureError, sign, verify

SECRET = "unit-test-secret-0123456789"
LOOPBACK = "127.0.0.0/8"  # the tests' receivers listen on loopback, which a farm refuses unless listed


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
    with TestClient(
        create_app(
            FarmSettings(data_dir=tmp_path, database_url=db, webhook_secret=SECRET, webhook_allow_networks=LOOPBACK)
        )
    ) as api:
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
        assert json.loads(messages[0])["headers"]["argsrepr"] == repr([_delivery(sessions, finished).id])
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
    settings = FarmSettings(
        data_dir=tmp_path, webhook_secret=SECRET, webhook_allow_networks=LOOPBACK, webhook_max_attempts=2
    )
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
    outcome = deliver_once(
        job_id, sessions, FarmSettings(data_dir=tmp_path, webhook_secret=SECRET, webhook_allow_networks=LOOPBACK)
    )
    row = _delivery(sessions, job_id)
    assert outcome.state == DeliveryState.PENDING and outcome.retry_in == 2.0
    assert row.last_status_code is None and row.last_error.startswith("ConnectError")


def _batch(sessions: sessionmaker[Session], url: str, statuses: list[str], finished_ago: float = 60) -> str:
    """A batch of jobs in the given states (keys K1, K2, ...) with a batch webhook waiting."""
    with sessions() as s:
        batch = Batch(name="spring", template="{p}", key_column="sku", seed=0, source="json", rows=len(statuses))
        s.add(batch)
        s.flush()
        for n, status in enumerate(statuses, start=1):
            job = Job(
                prompt=f"p{n}",
                width=256,
                height=256,
                steps=2,
                guidance_scale=0.0,
                seed=n,
                status=status,
                batch_id=batch.id,
                item_key=f"K{n}",
                row_number=n,
                lane="bulk",
            )
            if status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                job.finished_at = utcnow() - timedelta(seconds=finished_ago)
                job.error = None if status == JobStatus.SUCCEEDED else "worker error: boom"
            s.add(job)
        s.add(WebhookDelivery(batch_id=batch.id, url=url))
        s.commit()
        return batch.id


def _batch_delivery(sessions: sessionmaker[Session], batch_id: str) -> WebhookDelivery:
    with sessions() as s:
        return s.scalars(
            select(WebhookDelivery).where(WebhookDelivery.batch_id == batch_id).order_by(WebhookDelivery.created_at)
        ).all()[-1]


def test_batch_webhook_is_due_only_when_no_job_of_the_batch_is_left_to_run(sessions: sessionmaker[Session]) -> None:
    running = _batch(sessions, "http://127.0.0.1:9/h", [JobStatus.SUCCEEDED, JobStatus.RUNNING])
    done = _batch(sessions, "http://127.0.0.1:9/h", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED])
    just_done = _batch(sessions, "http://127.0.0.1:9/h", [JobStatus.SUCCEEDED], finished_ago=1)
    grace = utcnow() - timedelta(seconds=5)
    with sessions() as s:
        assert take_due(s, batch_id=running) == []
        assert take_due(s, batch_id=just_done, finished_before=grace) == []  # its worker hands it over itself
        assert take_due(s, batch_id=done, finished_before=grace) == [_batch_delivery(sessions, done).id]
        assert take_due(s, batch_id=done) == []  # taken once: now pending
        s.commit()
    assert _batch_delivery(sessions, running).state == DeliveryState.WAITING
    assert _batch_delivery(sessions, done).state == DeliveryState.PENDING


def test_batch_payload_has_counts_links_and_the_keys_that_did_not_succeed(
    sessions: sessionmaker[Session], receiver: Receiver, tmp_path: Path
) -> None:
    batch_id = _batch(sessions, receiver.url + "/batch", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD])
    with sessions() as s:
        [delivery_id] = take_due(s, batch_id=batch_id)
        s.commit()
    settings = FarmSettings(
        data_dir=tmp_path, webhook_secret=SECRET, webhook_allow_networks=LOOPBACK, public_url="http://farm.example"
    )
    # when
    outcome = deliver_once(delivery_id, sessions, settings)
    # then
    [request] = receiver.on("/batch")
    verify(SECRET, request.headers[SIGNATURE_HEADER], request.body)
    payload = request.json()
    assert outcome.state == DeliveryState.DELIVERED
    assert payload["event"] == "batch.finished" == request.headers["X-Zfarm-Event"]
    assert payload["delivery_id"] == delivery_id == request.headers["X-Zfarm-Delivery"]
    batch = payload["batch"]
    assert (batch["id"], batch["status"], batch["rows"]) == (batch_id, "failed", 3)
    assert (batch["counts"]["succeeded"], batch["counts"]["failed"], batch["counts"]["dead"]) == (1, 1, 1)
    assert batch["manifest_url"] == f"http://farm.example/v1/batches/{batch_id}/manifest.csv"
    assert [(p["key"], p["row"], p["status"]) for p in batch["not_succeeded"]] == [
        ("K2", 2, "failed"),
        ("K3", 3, "dead"),
    ]
    assert batch["not_succeeded"][0]["error"] == "worker error: boom" and batch["not_succeeded_truncated"] is False
    assert "job" not in payload


def test_a_batch_that_runs_again_gets_a_new_delivery(sessions: sessionmaker[Session]) -> None:
    batch_id = _batch(sessions, "http://127.0.0.1:9/h", [JobStatus.FAILED])
    with sessions() as s:
        s.execute(update(WebhookDelivery).values(state=DeliveryState.DELIVERED))
        reopen_batch_delivery(s, batch_id)
        reopen_batch_delivery(s, batch_id)  # a second retry before it ran: still one waiting row
        s.commit()
        rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.batch_id == batch_id)).all()
    assert sorted(r.state for r in rows) == [DeliveryState.DELIVERED, DeliveryState.WAITING]
    assert len({r.id for r in rows}) == 2 and {r.url for r in rows} == {"http://127.0.0.1:9/h"}


def test_batch_callback_url_is_refused_without_a_secret_and_recorded_with_one(tmp_path: Path, redis_url: str) -> None:
    db = f"sqlite:///{tmp_path / 'z.db'}"
    upgrade(db)
    body = {"template": "{p}", "rows": [{"sku": "A", "p": "mug"}], "callback_url": "http://127.0.0.1:9/hook"}
    with TestClient(create_app(FarmSettings(data_dir=tmp_path, database_url=db, webhook_secret=None))) as api:
        refused = api.post("/v1/batches", json=body)
        assert refused.status_code == 422
        [problem] = refused.json()["detail"]
        assert problem["field"] == "callback_url" and "ZFARM_WEBHOOK_SECRET" in problem["rule"]
        assert api.get("/v1/batches").json()["batches"] == []
    with TestClient(
        create_app(
            FarmSettings(data_dir=tmp_path, database_url=db, webhook_secret=SECRET, webhook_allow_networks=LOOPBACK)
        )
    ) as api:
        created = api.post("/v1/batches", json=body)
        assert created.status_code == 202, created.text
        batch = api.get(created.json()["url"]).json()
        assert batch["callback_url"] == "http://127.0.0.1:9/hook" and batch["webhook"]["state"] == "waiting"
        bad = api.post("/v1/batches", json={**body, "callback_url": "ftp://x/y"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "callback_url"
        # when the batch ended, was announced, and its failed job is retried
        with api.app.state.sessions() as s:
            s.execute(update(Job).values(status=JobStatus.FAILED, finished_at=utcnow(), error="boom"))
            s.execute(update(WebhookDelivery).values(state=DeliveryState.DELIVERED))
            s.commit()
        assert api.post(f"{batch['url']}/retry-failed").json()["requeued"] == 1
        # then: its next ending gets a delivery of its own
        again = api.get(batch["url"]).json()
        assert again["status"] == "active" and again["webhook"]["state"] == "waiting"
        with api.app.state.sessions() as s:
            assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == 2
