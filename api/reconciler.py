"""Re-sends jobs whose message never reached Redis (broker down at submit, crash between commit and send)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.enqueue import Enqueuer
from models import Job, JobStatus
from models.base import utcnow

log = logging.getLogger(__name__)


def resend_unsent(sessions: sessionmaker[Session], enqueuer: Enqueuer, older_than: float = 5.0) -> int:
    cutoff = utcnow() - timedelta(seconds=older_than)
    with sessions() as s:
        ids = list(
            s.scalars(
                select(Job.id)
                .where(Job.status == JobStatus.QUEUED, Job.enqueued_at.is_(None), Job.created_at < cutoff)
                .order_by(Job.created_at)
                .limit(1000)
            )
        )
    if ids:
        sent = enqueuer.send(ids)
        log.info("reconciler re-sent %d of %d unsent job(s)", len(sent), len(ids))
        return len(sent)
    return 0


class Reconciler(threading.Thread):
    def __init__(self, sessions: sessionmaker[Session], enqueuer: Enqueuer, every: float = 10.0) -> None:
        super().__init__(name="reconciler", daemon=True)
        self.sessions, self.enqueuer, self.every = sessions, enqueuer, every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                resend_unsent(self.sessions, self.enqueuer)
            except Exception:  # the database may be restarting; the next round tries again
                log.exception("reconciler round failed")
