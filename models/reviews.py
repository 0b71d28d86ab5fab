"""The catalog review of a batch: a row's current job is approved, rejected, or re-rolled with a new seed.

A batch keeps one job per row. Re-rolling makes a new job for the row (same parameters, a new seed) and takes
the old one out of the batch (its batch_id cleared, `superseded_by` naming the new job, `rerolled_from_batch`
the batch), so every batch query (counts, manifest, archive, dispatch, webhooks) sees the row's current job
only, and the old image stays readable by its job id.
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import lifecycle
from models.base import new_id, utcnow
from models.jobs import Job
from models.statuses import FINAL_STATUSES, JobStatus

SEED_SPACE = 2**63


class Review(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


class ReviewRefused(ValueError):
    """The row is not in a state for this review action (the API answers 409 with this text)."""


# Columns a re-rolled job takes from its predecessor; the rest start fresh (status, timings, record, review).
_CARRIED = (
    "tenant", "prompt", "negative_prompt", "adjustments", "requested_prompt", "width", "height", "steps",
    "guidance_scale", "num_images", "output_format", "quality", "truncate_prompt", "renditions", "batch_id",
    "item_key", "row_number", "lane", "dedup",
)  # fmt: skip


def current_job(session: Session, batch_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.batch_id == batch_id, Job.item_key == key))


def review(session: Session, job: Job, verdict: Review, note: str | None) -> None:
    if verdict == Review.APPROVED and job.status != JobStatus.SUCCEEDED:
        raise ReviewRefused(f"only a succeeded row's image can be approved; {job.item_key!r} is {job.status}")
    if job.status not in FINAL_STATUSES:
        raise ReviewRefused(f"{job.item_key!r} is still {job.status}: review it once it has ended")
    job.review, job.review_note, job.reviewed_at = verdict.value, note, utcnow()


def reroll(session: Session, job: Job, content_hash: Any, seed: int | None = None) -> Job:
    """A new job for the row with a new seed (queued; the dispatcher feeds it); the old one leaves the batch.

    `content_hash(params, seed)` gives the new job's hash (the API owns the hashing rules)."""
    if job.status not in FINAL_STATUSES:
        raise ReviewRefused(f"{job.item_key!r} is still {job.status}: re-roll it once it has ended")
    values = {name: getattr(job, name) for name in _CARRIED}
    new_seed = secrets.randbelow(SEED_SPACE) if seed is None else seed
    fresh = Job(
        id=new_id(),
        **values,
        seed=new_seed,
        attempts=0,
        cancel_requested=False,
        created_at=utcnow(),
        content_hash=content_hash(job, new_seed),
        **lifecycle.born_row(None, utcnow()),
    )
    job.batch_id, job.superseded_by, job.rerolled_from_batch = None, fresh.id, values["batch_id"]
    session.flush()  # the old row leaves the batch before the new one takes its row
    session.add(fresh)
    return fresh
