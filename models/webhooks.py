"""Webhook deliveries: one row per job or batch that asked for a callback, written when it is accepted.

The row is the outbox: it exists before the job or batch can finish, so no completion is ever missed, and
its state says how far the delivery got (waiting, pending with attempts, delivered, failed). A batch is
finished when none of its jobs is queued or running; a batch that runs again (retry-failed) gets a new
row, so its receiver sees a new delivery id rather than a repeat it would drop.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text, and_, exists, func, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from models.base import Base, new_id, utcnow
from models.types import UTCDateTime

if TYPE_CHECKING:
    from models.batches import Batch
    from models.jobs import Job


MAX_BACKOFF_SECONDS = 600.0
# A pending delivery untouched this long lost its message: longer than the longest backoff plus the
# longest request (ZFARM_WEBHOOK_TIMEOUT_SECONDS is at most 120) plus a margin.
STALE_AFTER_SECONDS = 900.0


class DeliveryState(StrEnum):
    WAITING = "waiting"  # the job or batch has not finished yet
    PENDING = "pending"  # finished; being delivered, maybe between retries
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (CheckConstraint("(job_id IS NULL) <> (batch_id IS NULL)", name="one_subject"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # Exactly one of the two: the job or the batch whose ending is announced.
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True, default=None)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True, default=None)
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.WAITING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Refreshed whenever a sender takes or records an attempt: a pending row left untouched for long
    # lost its retry message, and the API's sweep sends it again.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    job: Mapped[Job | None] = relationship(back_populates="webhook")
    batch: Mapped[Batch | None] = relationship()

    @property
    def event(self) -> str:
        return "batch.finished" if self.batch_id is not None else "job.finished"


def take_due(
    session: Session,
    *,
    stale_before: datetime | None = None,
    job_id: str | None = None,
    batch_id: str | None = None,
    finished_before: datetime | None = None,
    limit: int = 100,
) -> list[str]:
    """Moves deliveries that are due to `pending` and returns their ids: the caller sends one message each.

    Due: waiting for a job that has finished or a batch with no job left to run, or pending but untouched
    since `stale_before` (its message was lost). `finished_before` holds back what ended later than that
    (the worker hands those over itself). The compare-and-set means two senders racing here send one
    message, not two.
    """
    from models.jobs import FINAL_STATUSES, Job

    stale_before = stale_before or utcnow() - timedelta(seconds=STALE_AFTER_SECONDS)
    finished = select(Job.id).where(Job.status.in_(FINAL_STATUSES))
    if finished_before is not None:
        finished = finished.where(Job.finished_at < finished_before)
    batch_open = exists().where(Job.batch_id == WebhookDelivery.batch_id, Job.status.not_in(FINAL_STATUSES))
    batch_done = and_(WebhookDelivery.batch_id.is_not(None), ~batch_open)
    if finished_before is not None:
        last_end = select(func.max(Job.finished_at)).where(Job.batch_id == WebhookDelivery.batch_id)
        batch_done = and_(batch_done, last_end.scalar_subquery() < finished_before)
    due = or_(
        and_(WebhookDelivery.state == DeliveryState.WAITING, WebhookDelivery.job_id.in_(finished)),
        and_(WebhookDelivery.state == DeliveryState.WAITING, batch_done),
        and_(WebhookDelivery.state == DeliveryState.PENDING, WebhookDelivery.updated_at < stale_before),
    )
    query = select(WebhookDelivery.id, WebhookDelivery.state, WebhookDelivery.updated_at)
    if job_id is not None:
        query = query.where(WebhookDelivery.job_id == job_id)
    if batch_id is not None:
        query = query.where(WebhookDelivery.batch_id == batch_id)
    taken = []
    for row_id, state, updated_at in session.execute(query.where(due).limit(limit)).all():
        won = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == row_id,
                WebhookDelivery.state == state,
                WebhookDelivery.updated_at == updated_at,
            )
            .values(state=DeliveryState.PENDING, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        if won == 1:
            taken.append(row_id)
    return taken


def reopen_batch_delivery(session: Session, batch_id: str) -> None:
    """A batch that runs again (retry-failed) announces its new ending with a new delivery."""
    rows = session.scalars(select(WebhookDelivery).where(WebhookDelivery.batch_id == batch_id)).all()
    if rows and not any(r.state == DeliveryState.WAITING for r in rows):
        latest = max(rows, key=lambda r: r.created_at)
        session.add(WebhookDelivery(batch_id=batch_id, url=latest.url, created_at=utcnow(), updated_at=utcnow()))
