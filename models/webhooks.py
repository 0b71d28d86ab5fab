"""Webhook deliveries: one row per job that asked for a callback, written when the job is accepted.

The row is the outbox: it exists before the job can finish, so no completion is ever missed, and its
state says how far the delivery got (waiting for the job, pending with attempts, delivered, failed).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Integer, String, Text, and_, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from models.base import Base, new_id, utcnow
from models.types import UTCDateTime

if TYPE_CHECKING:
    from models.jobs import Job


MAX_BACKOFF_SECONDS = 600.0
# A pending delivery untouched this long lost its message: longer than the longest backoff plus the
# longest request (ZFARM_WEBHOOK_TIMEOUT_SECONDS is at most 120) plus a margin.
STALE_AFTER_SECONDS = 900.0


class DeliveryState(StrEnum):
    WAITING = "waiting"  # the job has not finished yet
    PENDING = "pending"  # finished; being delivered, maybe between retries
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
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

    job: Mapped[Job] = relationship(back_populates="webhook")


def take_due(
    session: Session,
    *,
    stale_before: datetime | None = None,
    job_id: str | None = None,
    finished_before: datetime | None = None,
    limit: int = 100,
) -> list[str]:
    """Moves deliveries that are due to `pending` and returns their job ids: the caller sends one message each.

    Due: waiting for a job that has finished, or pending but untouched since `stale_before` (its message
    was lost). The compare-and-set means two senders racing here send one message, not two.
    """
    from models.jobs import FINAL_STATUSES, Job

    stale_before = stale_before or utcnow() - timedelta(seconds=STALE_AFTER_SECONDS)
    finished = select(Job.id).where(Job.status.in_(FINAL_STATUSES))
    if finished_before is not None:
        finished = finished.where(Job.finished_at < finished_before)
    due = or_(
        and_(WebhookDelivery.state == DeliveryState.WAITING, WebhookDelivery.job_id.in_(finished)),
        and_(WebhookDelivery.state == DeliveryState.PENDING, WebhookDelivery.updated_at < stale_before),
    )
    query = select(WebhookDelivery.id, WebhookDelivery.job_id, WebhookDelivery.state, WebhookDelivery.updated_at)
    if job_id is not None:
        query = query.where(WebhookDelivery.job_id == job_id)
    taken = []
    for row_id, row_job_id, state, updated_at in session.execute(query.where(due).limit(limit)).all():
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
            taken.append(row_job_id)
    return taken
