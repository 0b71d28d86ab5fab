"""Celery tasks: thin, they take an id and call plain functions."""

from __future__ import annotations

import logging
import os
import socket

from celery.signals import worker_process_init, worker_process_shutdown
from sqlalchemy.exc import OperationalError

from broker_config.celery_app import app
from broker_config.task_names import RENDER_JOB
from models import WorkerState
from worker.jobs import JobContext, run_job
from worker.process import set_state, start_worker_process
from zfarm.settings import get_settings

log = logging.getLogger(__name__)
_ctx: JobContext | None = None


def worker_name() -> str:
    return os.environ.get("ZFARM_WORKER_NAME") or f"cpu0@{socket.gethostname()}"


@worker_process_init.connect
def _start_child(**_: object) -> None:
    global _ctx
    _ctx = start_worker_process(get_settings(), worker_name())


@worker_process_shutdown.connect
def _stop_child(**_: object) -> None:
    if _ctx is not None:
        set_state(_ctx.sessions, _ctx.name, WorkerState.OFFLINE, current_job_id=None)


@app.task(name=RENDER_JOB, bind=True, max_retries=None)
def render_job(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    if _ctx is None:
        raise RuntimeError("worker process was not initialised (worker_process_init did not run)")
    try:
        return run_job(job_id, _ctx)
    except OperationalError as exc:
        # The database is away (restart, failover): try the same job again shortly, do not fail it.
        log.warning("database unavailable while running job %s: %s", job_id, exc)
        raise self.retry(exc=exc, countdown=5) from exc
