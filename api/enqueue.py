"""Sending job ids to Redis, after their rows are committed."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from broker_config.task_names import RENDER_JOB
from models import Job
from models.base import utcnow
from models.db import transaction

log = logging.getLogger(__name__)
# Fail fast when Redis is down: the row is already committed and the reconciler sends it later.
_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


class Enqueuer:
    def __init__(self, celery: Celery, sessions: sessionmaker[Session], queue: str) -> None:
        self.celery, self.sessions, self.queue = celery, sessions, queue

    def send(self, job_ids: Iterable[str]) -> list[str]:
        """Sends each id; returns those sent. A failure leaves the row queued with enqueued_at unset."""
        sent: list[str] = []
        try:
            with self.celery.producer_or_acquire() as producer:
                for job_id in job_ids:
                    self.celery.send_task(
                        RENDER_JOB,
                        args=[job_id],
                        queue=self.queue,
                        producer=producer,
                        retry=True,
                        retry_policy=_RETRY,
                    )
                    sent.append(job_id)
        except (BrokerError, OSError) as exc:
            log.warning("broker unavailable, %d job(s) left for the reconciler: %s", len(sent), exc)
        if sent:
            with transaction(self.sessions) as s:
                s.execute(update(Job).where(Job.id.in_(sent)).values(enqueued_at=utcnow()))
        return sent
