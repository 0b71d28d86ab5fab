"""Live progress: the denoising step of a running job, written to its row at most twice a second.

Why the job row and not Redis: the row already is the job's state (GET /v1/jobs/{id} and the event
streams read it), it outlives a Redis restart, and two small UPDATEs a second per GPU are nothing for
PostgreSQL even across a large fleet. One source of truth beats a fast second one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models import Job, JobStatus
from models.db import transaction
from worker.render import StepCallback

log = logging.getLogger(__name__)
PROGRESS_EVERY_SECONDS = 0.5


def report_progress(
    job_id: str,
    sessions: sessionmaker[Session],
    inner: StepCallback | None = None,
    every: float = PROGRESS_EVERY_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> StepCallback:
    """Wraps a step callback (the cancel check) so that each step is also reported, rate-limited."""
    last = [float("-inf")]

    def on_step(step: int, total: int) -> None:
        now = clock()
        # The last step is always written: it tells watchers that the VAE decode and storing began.
        if step == total or now - last[0] >= every:
            last[0] = now
            write_progress(job_id, sessions, step, total)
        if inner is not None:
            inner(step, total)

    return on_step


def write_progress(job_id: str, sessions: sessionmaker[Session], step: int, total: int) -> None:
    try:
        with transaction(sessions) as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                .values(progress_step=step, progress_total=total)
            )
    except SQLAlchemyError as exc:  # progress is advisory: a missed write must never fail the render
        log.warning("could not record progress of job %s: %s", job_id, exc)
