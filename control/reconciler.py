"""Keeps every accepted job moving when messages or workers are lost.

Three passes, each safe to repeat (a second message for a job is skipped by the worker's claim):
1. unsent: committed interactive rows whose send never reached Redis (broker down at submit, crash after
   commit); unsent bulk rows are the dispatcher's (api/dispatcher.py), which sends them by turns;
2. lost: queued rows whose message Redis no longer holds (restart without persistence), seen twice;
3. orphaned: running rows whose worker stopped heart-beating (host lost, worker killed) go back to the
   queue, and rows running far past the hard time limit are failed with the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session, sessionmaker

from control.broker_inspect import job_ids_in_broker
from control.enqueue import Enqueuer
from control.leader import always
from models import Job, JobStatus, Lane, Worker, lifecycle
from models.base import utcnow
from models.db import transaction

log = logging.getLogger(__name__)
BATCH = 1000


@dataclass
class Reconciler:
    sessions: sessionmaker[Session]
    enqueuer: Enqueuer
    redis_url: str
    offline_after: float = 30.0
    time_limit: float = 1800.0
    unsent_after: float = 5.0
    lost_after: float = 60.0
    _suspects: set[str] = field(default_factory=set)

    def run_once(self) -> dict[str, int]:
        return {
            "unsent": self.resend_unsent(),
            "lost": self.resend_lost(),
            "orphaned": self.requeue_orphaned(),
            "overdue": self.fail_overdue(),
        }

    def resend_unsent(self) -> int:
        cutoff = utcnow() - timedelta(seconds=self.unsent_after)
        ids = self._ids(
            Job.lane == Lane.INTERACTIVE,
            Job.status == JobStatus.QUEUED,
            Job.enqueued_at.is_(None),
            Job.created_at < cutoff,
        )
        return len(self.enqueuer.send(ids)) if ids else 0

    def resend_lost(self) -> int:
        cutoff = utcnow() - timedelta(seconds=self.lost_after)
        candidates = set(self._ids(Job.status == JobStatus.QUEUED, Job.enqueued_at < cutoff))
        if not candidates:
            self._suspects.clear()
            return 0
        client = redis.Redis.from_url(self.redis_url)
        try:
            missing = candidates - job_ids_in_broker(client, self.enqueuer.queue, delivered_within=self.lost_after)
        finally:
            client.close()
        # Missing on two rounds in a row: a message in flight between list and unacked hash is not lost.
        lost, self._suspects = missing & self._suspects, missing - self._suspects
        return len(self.enqueuer.resend(sorted(lost))) if lost else 0

    def requeue_orphaned(self) -> int:
        stale = utcnow() - timedelta(seconds=self.offline_after)
        with transaction(self.sessions) as s:
            live = select(Worker.name).where(Worker.last_heartbeat >= stale)
            ids = list(
                s.scalars(
                    select(Job.id)
                    .where(
                        Job.status == JobStatus.RUNNING,
                        or_(Job.worker_name.is_(None), Job.worker_name.not_in(live)),
                    )
                    .limit(BATCH)
                )
            )
            if ids:
                lifecycle.requeue(s, Job.id.in_(ids), error="requeued: its worker went offline")
        return len(self.enqueuer.resend(ids)) if ids else 0

    def fail_overdue(self) -> int:
        overdue = utcnow() - timedelta(seconds=self.time_limit + self.offline_after)
        with transaction(self.sessions) as s:
            return lifecycle.fail_where(
                s, Job.started_at < overdue, error=f"exceeded the hard time limit of {self.time_limit:.0f} s"
            )

    def _ids(self, *where: ColumnElement[bool]) -> list[str]:
        with self.sessions() as s:
            return list(s.scalars(select(Job.id).where(*where).order_by(Job.created_at).limit(BATCH)))


class ReconcilerThread(threading.Thread):
    def __init__(self, reconciler: Reconciler, every: float = 10.0, leader: Callable[[], bool] = always) -> None:
        super().__init__(name="reconciler", daemon=True)
        self.reconciler, self.every = reconciler, every
        self.leader = leader  # rounds run only in the replica that holds the farm's lease (control/leader.py)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            if not self.leader():
                continue
            try:
                counts = self.reconciler.run_once()
                if any(counts.values()):
                    log.info("reconciler: %s", counts)
            except Exception:  # the database or Redis may be restarting; the next round tries again
                log.exception("reconciler round failed")
