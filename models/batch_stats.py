"""A batch's numbers read from its jobs: counts by status, images done, GPU seconds, pace; and its state."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from models.batches import Batch
from models.jobs import MASTER, Image, Job
from models.statuses import FINAL_STATUSES, JobStatus


@dataclass(frozen=True)
class BatchStats:
    counts: dict[str, int]
    images_done: int
    gpu_seconds: float
    eta_seconds: float | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(n for status, n in self.counts.items() if status in FINAL_STATUSES)

    def state(self, batch: Batch) -> str:
        if self.done < self.total:
            return "active"
        if batch.canceled_at is not None and self.counts.get(JobStatus.CANCELED, 0):
            return "canceled"
        return "succeeded" if self.counts.get(JobStatus.SUCCEEDED, 0) == self.total else "failed"


def batch_stats(s: Session, batch_id: str) -> BatchStats:
    counts = {str(status): 0 for status in JobStatus}
    for status, n in s.execute(select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)):
        counts[status] = n
    images = s.scalar(
        select(func.count(Image.id))
        .join(Job, Image.job_id == Job.id)
        .where(Job.batch_id == batch_id, Image.rendition == MASTER)
    )
    gpu, first_start, last_end, rendered = s.execute(
        select(
            func.sum(Job.gpu_seconds), func.min(Job.started_at), func.max(Job.finished_at), func.count(Job.id)
        ).where(
            Job.batch_id == batch_id,
            Job.reused_from.is_(None),
            Job.status.in_([JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD]),
        )
    ).one()
    remaining = counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING]
    eta = None
    # The batch's own pace on the farm as it is (shared with other work), not a per-GPU estimate.
    if remaining and rendered >= 2 and first_start and last_end and last_end > first_start:
        eta = remaining * (last_end - first_start).total_seconds() / rendered
    return BatchStats(counts, int(images or 0), float(gpu or 0.0), eta)


def batch_state_is(state: str) -> ColumnElement[bool]:
    """A WHERE clause on batches for one state, the same rule as BatchStats.state, in SQL (for listing)."""
    jobs = select(Job.id).where(Job.batch_id == Batch.id)
    active = jobs.where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])).exists()
    canceled = and_(Batch.canceled_at.is_not(None), jobs.where(Job.status == JobStatus.CANCELED).exists())
    all_succeeded = ~jobs.where(Job.status != JobStatus.SUCCEEDED).exists()
    if state == "active":
        return active
    if state == "canceled":
        return and_(~active, canceled)
    if state == "succeeded":
        return and_(~active, ~canceled, all_succeeded)
    return and_(~active, ~canceled, ~all_succeeded)  # failed
