"""Reading a batch back: counts, pace, and its jobs page by page (short sessions, never one long transaction)."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import Job
from models.batch_stats import BatchStats, batch_stats
from models.reviews import Review

__all__ = ["PAGE", "BatchStats", "batch_jobs", "batch_stats"]

PAGE = 500


def batch_jobs(sessions: sessionmaker[Session], batch_id: str, approved_only: bool = False) -> Iterator[Job]:
    """Every job of the batch in row order (only approved rows if asked), read in pages by keyset, one short
    session per page."""
    after = 0
    while True:
        with sessions() as s:
            query = select(Job).where(Job.batch_id == batch_id, Job.row_number > after)
            if approved_only:
                query = query.where(Job.review == Review.APPROVED)
            page = list(s.scalars(query.order_by(Job.row_number).limit(PAGE)))
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].row_number or 0
