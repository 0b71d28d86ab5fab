"""Writing a final `failed` status from wherever a failure is noticed, the Celery parent included."""

from __future__ import annotations

import logging

from sqlalchemy import create_engine, update
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from models import Worker, lifecycle

log = logging.getLogger(__name__)


def mark_failed(database_url: str, job_id: str | None, reason: str, worker_name: str) -> None:
    if not job_id:
        return
    # NullPool: the Celery parent forks new children; no pooled connection may be inherited by them.
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with Session(engine) as session, session.begin():
            lifecycle.fail(session, job_id, reason)
            session.execute(update(Worker).where(Worker.name == worker_name).values(state="ready", current_job_id=None))
    except Exception:  # the failure is already being reported by Celery; do not mask it
        log.exception("could not record failure of job %s", job_id)
    finally:
        engine.dispose()
