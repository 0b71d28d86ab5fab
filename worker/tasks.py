"""Celery tasks: thin, they take an id and call plain functions.

The worker's parent process imports this module to register the task, then forks the child that renders. The
rendering stack (torch, diffusers, transformers and what they pull in) is imported in the child only: some of
it initialises CUDA on import (transformers imports torchao when it is installed, and torchao's kernels library
does, on a GPU machine), and a parent that has touched CUDA hands its child a CUDA it cannot use
("Cannot re-initialize CUDA in forked subprocess").
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

from billiard.exceptions import WorkerLostError
from celery import Task
from celery.exceptions import TimeLimitExceeded
from celery.signals import worker_process_init, worker_process_shutdown
from sqlalchemy.exc import OperationalError

from broker_config.celery_app import app
from broker_config.task_names import RENDER_JOB
from core.settings import get_settings
from models import WorkerState
from worker import bulk_taken  # noqa: F401  (the consumer rings the bulk dispatcher as it takes a bulk id)
from worker.failures import mark_failed
from worker.start_failure import give_up_start

if TYPE_CHECKING:
    from worker.jobs import JobContext

log = logging.getLogger(__name__)
_ctx: JobContext | None = None


def worker_name() -> str:
    return os.environ.get("ZFARM_WORKER_NAME") or f"cpu0@{socket.gethostname()}"


@worker_process_init.connect
def _start_child(**_: object) -> None:
    global _ctx
    from worker.process import start_worker_process  # in the child: see the module's docstring

    try:
        _ctx = start_worker_process(get_settings(), worker_name())
    except Exception as exc:  # anything that keeps this card from rendering: stop, never look ready
        give_up_start(worker_name(), exc)


@worker_process_shutdown.connect
def _stop_child(**_: object) -> None:
    if _ctx is not None:
        from worker.process import set_state

        _ctx.finisher.drain()  # images rendered before the stop are stored and recorded, not rendered again
        set_state(_ctx.sessions, _ctx.name, WorkerState.OFFLINE, current_job_id=None)


class RenderTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # Runs in the child for an unexpected error, and in the parent for a hard time limit (the child
        # was killed mid-job). Either way the job gets a final status with the reason.
        job_id = args[0] if args else kwargs.get("job_id")
        if isinstance(exc, WorkerLostError):
            return  # the child died mid-job: reject_on_worker_lost requeued the message, the job will run again
        if isinstance(exc, TimeLimitExceeded):
            reason = f"killed at the hard time limit of {exc.args[0] if exc.args else '?'} s"
        else:
            reason = f"worker error: {type(exc).__name__}: {exc}"
        mark_failed(get_settings().resolved_database_url, job_id, reason, worker_name())


@app.task(name=RENDER_JOB, bind=True, base=RenderTask, max_retries=None)
def render_job(self: RenderTask, job_id: str) -> str:
    if _ctx is None:
        raise RuntimeError("worker process was not initialised (worker_process_init did not run)")
    from worker.jobs import run_job

    try:
        outcome = run_job(job_id, _ctx)
    except OperationalError as exc:
        # The database is away (restart, failover): try the same job again shortly, do not fail it.
        log.warning("database unavailable while running job %s: %s", job_id, exc)
        raise self.retry(exc=exc, countdown=3) from exc
    return outcome  # webhooks were handed over as the ending was recorded (JobContext.notify)
