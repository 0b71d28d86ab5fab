"""The catalog review board's API: a batch's rows page by page, and approve / reject / re-roll per row."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from api.auth import PrincipalDep
from api.deps import SessionDep, SettingsDep
from api.job_identity import content_hash
from api.public_urls import base_url
from api.routes.batches import _get_batch
from api.schemas import ImageOut
from api.strict_route import StrictRoute
from models import Job, JobStatus
from models.deliveries import reopen_batch_delivery
from models.records import Presign, image_records, is_test_model, parameters
from models.reviews import Review, ReviewRefused, current_job, reroll, review

router = APIRouter(prefix="/v1/batches", tags=["review"], route_class=StrictRoute)
Approval = Literal["approved", "rejected", "pending"]


class ItemOut(BaseModel):
    key: str
    row: int
    job_id: str
    status: str
    error: str | None
    prompt: str
    seed: int
    images: list[ImageOut] = Field(description="the row's images, each with its renditions")
    review: Approval = Field(description="approved, rejected, or pending (not reviewed yet)")
    review_note: str | None
    reviewed_at: datetime | None
    rerolls: int = Field(description="how many times the row was re-rolled (earlier jobs keep their images)")
    test_model_noise: bool


class ItemPage(BaseModel):
    total: int = Field(description="rows matching the filters")
    offset: int
    limit: int
    items: list[ItemOut]


class ReviewNote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=500, description="why, e.g. 'logo cut off'")


def _item(job: Job, base_url: str, rerolls: int, presign: Presign | None = None) -> ItemOut:
    record = parameters(job)
    return ItemOut(
        key=job.item_key or "",
        row=job.row_number or 0,
        job_id=job.id,
        status=job.status,
        error=job.error,
        prompt=record["prompt"],
        seed=job.seed,
        images=[ImageOut.model_validate(im) for im in image_records(job, base_url, presign)],
        review=job.review or "pending",
        review_note=job.review_note,
        reviewed_at=job.reviewed_at,
        rerolls=rerolls,
        test_model_noise=is_test_model(job.model_id),
    )


def _rerolls(session: SessionDep, batch_id: str, keys: list[str]) -> dict[str, int]:
    if not keys:
        return {}
    query = (
        select(Job.item_key, func.count())
        .where(Job.rerolled_from_batch == batch_id, Job.item_key.in_(keys))
        .group_by(Job.item_key)
    )
    return {str(key): n for key, n in session.execute(query)}


@router.get("/{batch_id}/items", response_model=ItemPage)
def list_items(
    batch_id: str,
    session: SessionDep,
    request: Request,
    principal: PrincipalDep,
    status: JobStatus | None = None,
    approval: Approval | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ItemPage:
    """The batch's rows in row order, one page at a time, filtered by job status and review."""
    batch = _get_batch(session, batch_id, principal)
    query = select(Job).where(Job.batch_id == batch.id)
    if status is not None:
        query = query.where(Job.status == status)
    if approval == "pending":
        query = query.where(Job.review.is_(None))
    elif approval is not None:
        query = query.where(Job.review == approval)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    jobs = list(session.scalars(query.order_by(Job.row_number).offset(offset).limit(limit)))
    rerolls = _rerolls(session, batch.id, [j.item_key for j in jobs if j.item_key])
    base = base_url(request)
    presign = request.app.state.presign  # presigned mode: the board's <img> tags load from the bucket directly
    items = [_item(j, base, rerolls.get(j.item_key or "", 0), presign) for j in jobs]
    return ItemPage(total=total, offset=offset, limit=limit, items=items)


def _row(session: SessionDep, batch_id: str, key: str, principal: PrincipalDep) -> tuple[str, Job]:
    batch = _get_batch(session, batch_id, principal)
    job = current_job(session, batch.id, key)
    if job is None:
        raise HTTPException(404, detail=f"batch {batch.id} has no row with key {key!r}")
    return batch.id, job


def _verdict(
    batch_id: str, key: str, verdict: Review, note: ReviewNote | None, session: SessionDep, request: Request,
    principal: PrincipalDep,
) -> ItemOut:  # fmt: skip
    batch, job = _row(session, batch_id, key, principal)
    try:
        review(session, job, verdict, note.note if note else None)
    except ReviewRefused as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    session.commit()
    return _item(job, base_url(request), _rerolls(session, batch, [key]).get(key, 0), request.app.state.presign)


@router.post("/{batch_id}/items/{key}/approve", response_model=ItemOut)
def approve_item(
    batch_id: str,
    key: str,
    session: SessionDep,
    request: Request,
    principal: PrincipalDep,
    note: Annotated[ReviewNote | None, Body()] = None,
) -> ItemOut:
    """Approves the row's current image: the manifest says approved, `archive.zip?approved=true` takes it."""
    return _verdict(batch_id, key, Review.APPROVED, note, session, request, principal)


@router.post("/{batch_id}/items/{key}/reject", response_model=ItemOut)
def reject_item(
    batch_id: str,
    key: str,
    session: SessionDep,
    request: Request,
    principal: PrincipalDep,
    note: Annotated[ReviewNote | None, Body()] = None,
) -> ItemOut:
    """Rejects the row's current image (with an optional note); re-roll it for another."""
    return _verdict(batch_id, key, Review.REJECTED, note, session, request, principal)


@router.post("/{batch_id}/items/{key}/reroll", response_model=ItemOut)
def reroll_item(
    batch_id: str, key: str, session: SessionDep, request: Request, principal: PrincipalDep, settings: SettingsDep
) -> ItemOut:
    """A new job for the row with a new seed; the batch (manifest, archive, counts) follows the new one."""
    batch, job = _row(session, batch_id, key, principal)

    def new_hash(old: Job, seed: int) -> str:
        params = {**parameters(old), "seed": seed, "truncate_prompt": old.truncate_prompt}
        return content_hash(params, settings.model, settings.model_revision)

    try:
        fresh = reroll(session, job, new_hash)
    except ReviewRefused as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    reopen_batch_delivery(session, batch)  # the batch will end again: announce that ending too
    session.commit()
    request.app.state.wake_dispatcher()
    return _item(fresh, base_url(request), _rerolls(session, batch, [key]).get(key, 0), request.app.state.presign)
