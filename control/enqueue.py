"""Sending job ids to Redis, after their rows are committed: one producer, pipelined, per lane and precision."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import Celery
from kombu.exceptions import BatchPublishError
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from broker_config.task_names import RENDER_JOB
from core.queues import DEFAULT_LARGE_PIXELS, DEFAULT_PRECISION, bulk_queue_name, is_large, precision_queue, size_queue
from models import Job, Lane
from models.base import utcnow
from models.db import transaction

log = logging.getLogger(__name__)
# Fail fast when Redis is down: the row is already committed and the reconciler sends it later.
_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
# Messages per Redis pipeline: one round trip each, instead of one per message.
PIPELINE = 500


class Enqueuer:
    def __init__(
        self, celery: Celery, sessions: sessionmaker[Session], queue: str, large_pixels: int = DEFAULT_LARGE_PIXELS
    ) -> None:
        self.celery, self.sessions, self.queue, self.large_pixels = celery, sessions, queue, large_pixels
        self.queues = {Lane.INTERACTIVE: queue, Lane.BULK: bulk_queue_name(queue)}  # the bf16 tier's

    def queue_for(self, lane: Lane, precision: str, large: bool = False) -> str:
        """A lane's queue in a precision tier, for images over the large budget or not (core/queues.py)."""
        interactive = size_queue(precision_queue(self.queue, precision), large)
        return interactive if lane == Lane.INTERACTIVE else bulk_queue_name(interactive)

    def send(self, job_ids: Iterable[str], lane: Lane = Lane.INTERACTIVE, queue: str | None = None) -> list[str]:
        """Sends each id to its lane's queue of its precision (or to `queue`: a worker's own, control/affinity.py);
        returns those sent. Unsent rows keep enqueued_at unset."""
        ids = list(job_ids)
        sent: list[str] = []
        if queue is not None:
            sent = self._send(ids, queue)
        else:
            # Each id to its precision tier's queue, the large one for images over the budget.
            tiers: dict[str, tuple[str, bool]] = {}
            with self.sessions() as s:
                for i in range(0, len(ids), PIPELINE):
                    chunk = ids[i : i + PIPELINE]
                    rows = s.execute(select(Job.id, Job.precision, Job.width, Job.height).where(Job.id.in_(chunk)))
                    tiers.update((r.id, (r.precision, is_large(r.width, r.height, self.large_pixels))) for r in rows)
            for tier in sorted(set(tiers.values()) | {(DEFAULT_PRECISION, False)}):
                group = [i for i in ids if tiers.get(i, (DEFAULT_PRECISION, False)) == tier]
                if group:
                    sent.extend(self._send(group, self.queue_for(lane, *tier)))
        if sent:
            with transaction(self.sessions) as s:
                self.mark_sent(s, sent)
        return sent

    def publish(self, job_ids: list[str], queue: str) -> list[str]:
        """Sends ids to `queue` without recording them: the caller records those sent (`mark_sent`) in its own
        transaction (the dispatcher's round writes once)."""
        return self._send(job_ids, queue)

    @staticmethod
    def mark_sent(session: Session, job_ids: list[str]) -> None:
        for i in range(0, len(job_ids), PIPELINE):
            session.execute(update(Job).where(Job.id.in_(job_ids[i : i + PIPELINE])).values(enqueued_at=utcnow()))

    def _send(self, ids: list[str], queue: str) -> list[str]:
        sent: list[str] = []
        try:
            with self.celery.producer_or_acquire() as producer:
                for i in range(0, len(ids), PIPELINE):
                    chunk = ids[i : i + PIPELINE]
                    with producer.batch(max_size=PIPELINE + 1):
                        for job_id in chunk:
                            self.celery.send_task(
                                RENDER_JOB,
                                args=[job_id],
                                queue=queue,
                                producer=producer,
                                retry=True,
                                retry_policy=_RETRY,
                            )
                    sent.extend(chunk)  # the pipeline ran when its block closed without an error
        except (BrokerError, BatchPublishError, OSError) as exc:
            log.warning("broker unavailable, %d of %d job(s) left unsent: %s", len(ids) - len(sent), len(ids), exc)
        return sent

    def resend(self, job_ids: Iterable[str]) -> list[str]:
        """Sends ids of either lane, each to its own queue (the reconciler does not know their lanes)."""
        ids = list(job_ids)
        with self.sessions() as s:
            lanes = dict(s.execute(select(Job.id, Job.lane).where(Job.id.in_(ids))).tuples().all()) if ids else {}
        sent: list[str] = []
        for lane in Lane:
            group = [i for i in ids if lanes.get(i, Lane.INTERACTIVE) == lane]
            if group:
                sent.extend(self.send(group, lane))
        return sent
