"""Writing a final `failed` status from wherever a failure is noticed, the Celery parent included."""

from __future__ import annotations

import logging

from sqlalchemy import create_engine, update
from sqlalchemy.pool import NullPool

from models import Job, JobStatus, Worker
from models.base import utcnow

log = logging.getLogger(__name__)


def mark_failed(database_url: str, job_id: str | None, reason: str, worker_name: str) -> None:
    if not job_id:
        return
    # NullPool: the Celery parent forks new children; no pooled connection may be inherited by them.
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                .values(status=JobStatus.FAILED, finished_at=utcnow(), error=reason)
            )
            conn.execute(update(Worker).where(Worker.name == worker_name).values(state="ready", current_job_id=None))
    except Exception:  # the failure is already being reported by Celery; do not mask it
        log.exception("could not record failure of job %s", job_id)
    finally:
        engine.dispose()
