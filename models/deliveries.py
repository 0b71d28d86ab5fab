"""Which webhook deliveries are due: the outbox's queries over deliveries and the jobs they announce."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from models.base import utcnow
from models.jobs import Job
from models.statuses import FINAL_STATUSES
from models.webhooks import STALE_AFTER_SECONDS, DeliveryState, WebhookDelivery


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
        won = cast(
            CursorResult[Any],
            session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == row_id,
                    WebhookDelivery.state == state,
                    WebhookDelivery.updated_at == updated_at,
                )
                .values(state=DeliveryState.PENDING, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            ),
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
