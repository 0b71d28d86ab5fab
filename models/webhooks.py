"""Webhook deliveries: one row per job or batch that asked for a callback, written when it is accepted.

The row is the outbox: it exists before the job or batch can finish, so no completion is ever missed, and
its state says how far the delivery got (waiting, pending with attempts, delivered, failed). A batch is
finished when none of its jobs is queued or running; a batch that runs again (retry-failed) gets a new
row, so its receiver sees a new delivery id rather than a repeat it would drop.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

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
