"""The API side of webhooks: the sweep that hands due deliveries to the webhooks queue.

The worker hands a job's webhook (and its batch's, after the batch's last job) over right after the job
ends; this sweep catches every other ending (canceled before it ran, a batch canceled or done at once by
reuse, failed by the reconciler or by the Celery parent, a lost message) a little later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from broker_config.task_names import DELIVER_WEBHOOK
from control.leader import always
from core.settings import get_settings
from models.base import utcnow
from models.db import transaction
from models.deliveries import take_due

log = logging.getLogger(__name__)
# Give the worker's own hand-over this long before the sweep sends a job's webhook itself.
GRACE_SECONDS = 5.0


def webhook_queue() -> str:
    return get_settings().webhook_queue


def send_due_webhooks(
    sessions: sessionmaker[Session],
    celery: Celery,
    queue: str,
    *,
    grace: float = GRACE_SECONDS,
    job_id: str | None = None,
    batch_id: str | None = None,
) -> int:
    finished_before = utcnow() - timedelta(seconds=grace) if grace else None
    with transaction(sessions) as s:
        delivery_ids = take_due(s, job_id=job_id, batch_id=batch_id, finished_before=finished_before)
    for due in delivery_ids:
        celery.send_task(DELIVER_WEBHOOK, args=[due], queue=queue)
    return len(delivery_ids)


def send_now(
    sessions: sessionmaker[Session], celery: Celery, job_id: str | None = None, *, batch_id: str | None = None
) -> None:
    """Hands one finished job's or batch's webhook over at once; on any failure the sweep sends it later."""
    try:
        send_due_webhooks(sessions, celery, webhook_queue(), grace=0, job_id=job_id, batch_id=batch_id)
    except Exception:
        log.exception("could not hand the webhook of %s to the queue; the sweep will", job_id or batch_id)


class WebhookSweep(threading.Thread):
    def __init__(
        self,
        sessions: sessionmaker[Session],
        celery: Celery,
        queue: str,
        every: float,
        leader: Callable[[], bool] = always,
    ) -> None:
        super().__init__(name="webhook-sweep", daemon=True)
        self.sessions, self.celery, self.queue, self.every = sessions, celery, queue, every
        self.leader = leader  # rounds run only in the replica that holds the farm's lease (control/leader.py)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            if not self.leader():
                continue
            try:
                if sent := send_due_webhooks(self.sessions, self.celery, self.queue):
                    log.info("webhook sweep: sent %d", sent)
            except Exception:  # the database or Redis may be restarting; the next round tries again
                log.exception("webhook sweep failed")
