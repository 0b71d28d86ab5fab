"""The real `zfarm webhooks` sender: one tenant's slow receiver does not hold back another tenant's webhooks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from broker_config.celery_app import app as celery_app
from broker_config.task_names import DELIVER_WEBHOOK
from models import DeliveryState, Job, JobStatus, WebhookDelivery
from tests.farm_helpers import REPO, stop_process_group, wait_for
from tests.http_servers import Receiver, webhook_receiver

pytestmark = pytest.mark.e2e
SLOW_SECONDS = 4.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as r:
        yield r


def _pending(sessions: sessionmaker[Session], tenant: str, url: str) -> str:
    with sessions() as s:
        job = Job(prompt="p", width=256, height=256, steps=2, guidance_scale=0, seed=1, status=JobStatus.SUCCEEDED)
        job.tenant = tenant
        job.webhook = WebhookDelivery(url=url, state=DeliveryState.PENDING)
        s.add(job)
        s.commit()
        return job.webhook.id


def _sender(database_url: str, queue: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ZFARM_DATABASE_URL": database_url,
        "ZFARM_WEBHOOK_QUEUE": queue,
        "ZFARM_WEBHOOK_SECRET": "fairness-test-secret-0123456789",
        "ZFARM_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",  # the receiver listens on loopback
        "ZFARM_WEBHOOK_TENANT_CONCURRENCY": "2",
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "zfarm.cli", "webhooks", "--concurrency", "4"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_slow_tenant_does_not_delay_another_tenants_webhook(
    sessions: sessionmaker[Session], database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    # given: a sender with 4 threads, 4 deliveries of tenant "slow" to a receiver that takes 4 s each,
    # queued before one delivery of tenant "quick"
    receiver.delays["/slow"] = SLOW_SECONDS
    queue = f"zfarm-test-fair-{uuid.uuid4().hex[:8]}"
    slow = [_pending(sessions, "slow", receiver.url + "/slow") for _ in range(4)]
    quick = _pending(sessions, "quick", receiver.url + "/quick")
    sender = _sender(database_url, queue, tmp_path / "webhooks.log")
    try:
        wait_for(lambda: "ready" in (tmp_path / "webhooks.log").read_text(), 60, "the sender to start")
        # when
        sent_at = time.monotonic()
        for delivery_id in [*slow, quick]:
            celery_app.send_task(DELIVER_WEBHOOK, args=[delivery_id], queue=queue)
        wait_for(lambda: receiver.on("/quick"), 30, "the quick tenant's webhook")
        quick_after = receiver.on("/quick")[0].at - sent_at
        wait_for(lambda: len(receiver.on("/slow")) == 4, 60, "every slow webhook")
    finally:
        stop_process_group(sender)
    # then: "quick" did not wait for a slow receiver's answer; "slow" had at most 2 requests open at once,
    # and each of its webhooks was delivered once
    with sessions() as s:
        states = s.scalars(select(WebhookDelivery.state).where(WebhookDelivery.id.in_([*slow, quick]))).all()
    assert quick_after < SLOW_SECONDS / 2, f"the quick tenant's webhook took {quick_after:.1f} s"
    starts = sorted(r.at for r in receiver.on("/slow"))
    assert starts[2] - starts[0] >= SLOW_SECONDS * 0.9, "a third slow delivery started while two were open"
    assert sorted(states) == [DeliveryState.DELIVERED] * 5
