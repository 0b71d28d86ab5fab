"""A job's life: the only code that changes `Job.status`.

Every change is a named transition and a compare-and-set on the row (`UPDATE ... WHERE status IN
(sources)`), so two processes racing on one job (two deliveries, a worker and the reconciler, the API's
cancel and a claim) cannot both win, and a final status is never overwritten. Each function returns
whether (or on how many rows) the transition happened; the caller owns the transaction.

    queued --claim--> running --succeed--> succeeded
       |  \\            |  |  \\--fail----> failed  --queue (retry)--> queued
       |   \\--reuse--> succeeded (a twin's images)      dead    --queue (retry)--> queued
       |                |  \\--cancel--> canceled
       |                \\--requeue--> queued (its worker died or restarted)
       \\--cancel--> canceled          queued|running --kill--> dead (attempts used up)

A job is born `queued` (the column default) or, when a twin already succeeded, `succeeded` by reuse.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, update
from sqlalchemy.orm import Session

from models.base import utcnow
from models.jobs import Job
from models.statuses import JobStatus

Q, R, S, F, C, D = (
    JobStatus.QUEUED,
    JobStatus.RUNNING,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELED,
    JobStatus.DEAD,
)


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[JobStatus]
    target: JobStatus


QUEUE = Transition("queue", frozenset({F, D}), Q)  # retry-failed: a batch's failed and dead jobs run again
# `running` too: a delivery after the worker that held it died, or this worker's own earlier attempt
CLAIM = Transition("claim", frozenset({Q, R}), R)
SUCCEED = Transition("succeed", frozenset({R, Q}), S)  # `queued`: requeued while its images were being stored
FAIL = Transition("fail", frozenset({R}), F)
CANCEL = Transition("cancel", frozenset({Q, R}), C)
REQUEUE = Transition("requeue", frozenset({R}), Q)
KILL = Transition("kill", frozenset({Q, R}), D)  # kill-as-dead: its attempts are used up
REUSE = Transition("reuse", frozenset({Q, R}), S)
TRANSITIONS = (QUEUE, CLAIM, SUCCEED, FAIL, CANCEL, REQUEUE, KILL, REUSE)


class Outcome(StrEnum):
    """What one run of a job (one delivery of its id) came to."""

    RENDERED = "rendered"  # succeeded with images rendered here (or being stored by a finisher thread)
    REUSED = "reused"  # succeeded with the images of a twin that had succeeded
    FAILED = "failed"
    CANCELED = "canceled"
    DEAD = "dead"
    SKIPPED = "skipped"  # not run here: already final, run by another live worker, or another delivery won
    MISSING = "missing"  # no such job


ENDED = {S: Outcome.RENDERED, F: Outcome.FAILED, C: Outcome.CANCELED, D: Outcome.DEAD}


def _move(session: Session, transition: Transition, where: Sequence[ColumnElement[bool]], **values: Any) -> int:
    statement = (
        update(Job)
        .where(*where, Job.status.in_(transition.sources))
        .values(status=transition.target, **values)
        .execution_options(synchronize_session=False)
    )
    result = cast(CursorResult[Any], session.execute(statement))  # an UPDATE's result counts its rows
    return int(result.rowcount or 0)


def _ids(job_ids: str | Iterable[str]) -> list[str]:
    return [job_ids] if isinstance(job_ids, str) else list(job_ids)


# ---- born ----------------------------------------------------------------------------------------


def born_reused(job: Job, original_values: dict[str, Any]) -> None:
    """A new job (not yet flushed) that is done at once with a succeeded twin's images."""
    for name, value in original_values.items():
        setattr(job, name, value)
    job.status = S
    job.started_at = job.finished_at = job.created_at


def born_row(reused_values: dict[str, Any] | None, created_at: datetime) -> dict[str, Any]:
    """The status columns of a new row for a bulk insert: queued, or succeeded by reuse."""
    if reused_values is None:
        return {"status": Q}
    return {**reused_values, "status": S, "started_at": created_at, "finished_at": created_at}


# ---- the worker's transitions ----------------------------------------------------------------------


def claim(session: Session, job: Job, **record: Any) -> bool:
    """Compare-and-set on (status, attempts): of two deliveries racing here, one wins."""
    where = [Job.id == job.id, Job.status == job.status, Job.attempts == job.attempts]
    return _move(session, CLAIM, where, attempts=job.attempts + 1, started_at=utcnow(), error=None, **record) == 1


def succeed(session: Session, job_id: str, gpu_seconds: float, recovery: str | None) -> bool:
    values = {"finished_at": utcnow(), "gpu_seconds": gpu_seconds, "error": None, "recovery": recovery}
    return _move(session, SUCCEED, [Job.id == job_id], **values) == 1


def reuse(session: Session, job: Job, original_values: dict[str, Any]) -> bool:
    """Done without rendering with a twin's images; the same compare-and-set as a claim."""
    now = utcnow()
    where = [Job.id == job.id, Job.status == job.status, Job.attempts == job.attempts]
    return _move(session, REUSE, where, **original_values, started_at=now, finished_at=now, error=None) == 1


def kill(session: Session, job: Job, error: str) -> bool:
    """Dead: its deliveries are used up (a poison job that kills its worker every time ends here)."""
    return _move(session, KILL, [Job.id == job.id, Job.status == job.status], finished_at=utcnow(), error=error) == 1


def fail(session: Session, job_ids: str | Iterable[str], error: str) -> int:
    return _move(session, FAIL, [Job.id.in_(_ids(job_ids))], finished_at=utcnow(), error=error)


def end(session: Session, job_id: str, status: JobStatus, error: str) -> bool:
    """A running job ended without images: failed or canceled, with the reason."""
    transition = {F: FAIL, C: CANCEL}[status]
    return _move(session, transition, [Job.id == job_id], finished_at=utcnow(), error=error) == 1


# ---- the API's and the control loops' transitions ----------------------------------------------------


def cancel(session: Session, *where: ColumnElement[bool], error: str, only_queued: bool = False) -> int:
    """Canceled: a queued job never runs (only_queued: leave running ones to finish or stop themselves)."""
    conditions = [*where, Job.status == Q] if only_queued else list(where)
    return _move(session, CANCEL, conditions, cancel_requested=True, finished_at=utcnow(), error=error)


def requeue(session: Session, *where: ColumnElement[bool], error: str) -> int:
    """Back to the queue: the worker that ran it died or restarted; the reconciler sends it again."""
    return _move(session, REQUEUE, list(where), enqueued_at=None, error=error)


def fail_where(session: Session, *where: ColumnElement[bool], error: str) -> int:
    return _move(session, FAIL, list(where), finished_at=utcnow(), error=error)


def retry(session: Session, *where: ColumnElement[bool]) -> int:
    """Failed and dead jobs queued again, attempts counted from zero (a dead job has used them all)."""
    values = {
        "attempts": 0,
        "error": None,
        "started_at": None,
        "finished_at": None,
        "enqueued_at": None,  # the dispatcher sends them, by turns with other batches
        "gpu_seconds": None,
        "cancel_requested": False,
    }
    return _move(session, QUEUE, list(where), **values)
