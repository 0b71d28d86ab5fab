from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi import Path as FPath
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from api.auth import PrincipalDep
from api.batch_intake import scoped_key
from api.callbacks import callback_problem
from api.deps import EnqueuerDep, SessionDep, SettingsDep, StorageDep
from api.image_modes import IMAGE_FIELDS, replay_matches, resolve_job
from api.job_identity import content_hash
from api.job_presets import resolve
from api.lora_refs import LoraProblem, job_loras, same_loras
from api.prompt_checks import check_job, refuse
from api.public_urls import base_url, url_for
from api.refusals import Refusal
from api.schemas import (
    MAX_SEED,
    RENDITION_NAME,
    JobCreate,
    JobList,
    JobOut,
)
from api.stored_files import stored_response
from api.strict_route import StrictRoute
from api.waiting import waiting_for
from control.webhook_sweep import send_now
from models import Image, Job, JobStatus, Lane, WebhookDelivery, lifecycle
from models.base import utcnow
from models.dedup import copied_images, find_reusable, reused_values
from models.lookup import AmbiguousId, find
from models.loras import signature
from models.records import job_record
from models.statuses import FINAL_STATUSES

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=StrictRoute)
MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}


def job_out(job: Job, request: Request) -> JobOut:
    record = job_record(job, base_url(request), request.app.state.presign)
    return JobOut.model_validate({**record, "waiting_for": waiting_for(job, request)})


def _get_job(session: SessionDep, job_id: str, principal: PrincipalDep) -> Job:
    # An id or a unique prefix of one; another tenant's job answers exactly like a job that does not exist.
    try:
        job = find(session, Job, job_id, principal.tenant)
    except AmbiguousId as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    if job is None:
        raise HTTPException(status_code=404, detail=f"job {job_id!r} not found")
    return job


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut)
def create_job(
    body: JobCreate,
    session: SessionDep,
    enqueuer: EnqueuerDep,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JobOut:
    try:
        key = scoped_key(principal, idempotency_key)
    except Refusal as exc:
        raise exc.to_http() from exc
    body, adjustments, requested_prompt = resolve(body, settings)
    # Compared as resolved (preset folded in, helpers applied): that is what the stored job holds.
    if key is not None and (earlier := _replayed_job(session, key, body)) is not None:
        response.headers["Idempotent-Replayed"] = "true"
        response.headers["Location"] = url_for(request, "get_job", job_id=earlier.id)
        return job_out(earlier, request)
    resolved = resolve_job(body, session, principal.tenant, settings.max_pixels)
    # img2img and inpaint render at their image's size: the checks see the size the job will have.
    check_job(body.model_copy(update={"width": resolved.width, "height": resolved.height}), settings)
    if (bad_callback := callback_problem(body.callback_url, settings)) is not None:
        raise refuse("callback_url", *bad_callback)
    try:
        loras = job_loras(session, principal.tenant, body, settings)
    except LoraProblem as exc:
        raise refuse(exc.field, exc.value, exc.rule) from exc
    request.app.state.quotas.check_submit(session, principal)
    # 1. Commit the row first: a 202 means the job exists even if Redis is down right now.
    job = Job(
        tenant=principal.tenant,
        truncate_prompt=body.truncate_prompt,
        precision=body.precision,
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        width=resolved.width,
        height=resolved.height,
        steps=body.steps,
        guidance_scale=body.guidance_scale,
        seed=body.seed if body.seed is not None else secrets.randbelow(MAX_SEED + 1),
        num_images=body.num_images,
        output_format=body.output_format,
        quality=body.quality,
        renditions=[r.model_dump() for r in body.renditions] or None,
        loras=loras or None,
        adapters=signature(loras),
        add_trigger_words=body.add_trigger_words,
        dedup=body.dedup,
        attempts=0,
        cancel_requested=False,
        created_at=utcnow(),
        lane=Lane.INTERACTIVE,
        idempotency_key=key,
        adjustments=adjustments or None,
        requested_prompt=requested_prompt,
        mode=resolved.mode,
        image_asset_id=resolved.image.id if resolved.image else None,
        mask_asset_id=resolved.mask.id if resolved.mask else None,
        mode_parameters=resolved.parameters,
    )
    if body.callback_url is not None:
        # The outbox row is written with the job, so its ending can never be missed.
        job.webhook = WebhookDelivery(url=str(body.callback_url), created_at=utcnow(), updated_at=utcnow())
    asked = {**body.model_dump(), "seed": job.seed, "width": job.width, "height": job.height, **resolved.identity()}
    asked["loras"] = loras  # resolved: each adapter with its file's sha256
    job.content_hash = content_hash(asked, settings.model, settings.model_revision)
    original = find_reusable(session, [job.content_hash], principal.tenant, settings.model) if body.dedup else {}
    if original:
        # Done at once: same model, parameters and seed as a succeeded job, whose images it shares.
        [earlier_job] = original.values()
        lifecycle.born_reused(job, reused_values(earlier_job))
    session.add(job)
    try:
        session.flush()
        if original:
            session.execute(insert(Image), copied_images(earlier_job, job.id))
        session.commit()
    except IntegrityError:
        session.rollback()  # a concurrent request with the same Idempotency-Key won the race
        if key is None or (earlier := _replayed_job(session, key, body)) is None:
            raise
        response.headers["Idempotent-Replayed"] = "true"
        return job_out(earlier, request)
    # 2. Then send its id; the reconciler re-sends if this did not reach Redis.
    if not original:
        enqueuer.send([job.id])
    elif job.webhook is not None:
        send_now(request.app.state.sessions, request.app.state.celery, job.id)  # done at once by reuse
    session.refresh(job)
    response.headers["Location"] = url_for(request, "get_job", job_id=job.id)
    return job_out(job, request)


def _replayed_job(session: SessionDep, key: str, body: JobCreate) -> Job | None:
    """The job an earlier request with this Idempotency-Key made; a different request is refused (409)."""
    job = session.scalar(select(Job).where(Job.idempotency_key == key))
    if job is None:
        return None
    own_size = body.mode in ("img2img", "inpaint") and not {"width", "height"} & body.model_fields_set
    exclude = {"dedup", "seed", "callback_url", "loras", "preset", "enhance", *IMAGE_FIELDS}
    exclude |= {"width", "height"} if own_size else set()
    asked = body.model_dump(exclude=exclude, exclude_unset=False)
    asked["renditions"] = asked["renditions"] or None
    stored = {name: getattr(job, name) for name in asked}
    callback = (str(body.callback_url) if body.callback_url else None, job.webhook.url if job.webhook else None)
    if (
        asked != stored
        or not replay_matches(body, job)
        or (body.seed is not None and body.seed != job.seed)
        or callback[0] != callback[1]
    ):
        raise HTTPException(409, detail="this Idempotency-Key was used for a different job; use a new key")
    if not same_loras(body.loras, job.loras):
        raise HTTPException(409, detail="this Idempotency-Key was used for a different job; use a new key")
    return job


@router.get("", response_model=JobList)
def list_jobs(
    session: SessionDep,
    request: Request,
    principal: PrincipalDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobList:
    query = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if status is not None:
        query = query.where(Job.status == status)
    if principal.tenant is not None:
        query = query.where(Job.tenant == principal.tenant)
    return JobList(jobs=[job_out(j, request) for j in session.scalars(query)])


@router.get("/{job_id}", response_model=JobOut, name="get_job")
def get_job(job_id: str, session: SessionDep, request: Request, principal: PrincipalDep) -> JobOut:
    return job_out(_get_job(session, job_id, principal), request)


@router.delete("/{job_id}", response_model=JobOut)
def cancel_job(job_id: str, session: SessionDep, request: Request, principal: PrincipalDep) -> JobOut:
    job = _get_job(session, job_id, principal)
    if job.status in FINAL_STATUSES:
        raise HTTPException(409, detail=f"job {job_id} is already {job.status}; only queued or running jobs cancel")
    # A queued job never runs (the worker sees a final status and skips the message); a running one is
    # asked to stop and its worker ends it at the next step check.
    if not lifecycle.cancel(session, Job.id == job.id, error="canceled before it ran", only_queued=True):
        job.cancel_requested = True
    session.commit()
    session.refresh(job)
    if job.webhook is not None and job.status in FINAL_STATUSES:
        send_now(request.app.state.sessions, request.app.state.celery, job_id)
        session.refresh(job.webhook)
    return job_out(job, request)


@router.get(
    "/{job_id}/images/{index}",
    name="get_job_image",
    response_class=Response,
    responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}}},
)
def get_job_image(
    job_id: str,
    index: Annotated[int, FPath(ge=0, le=7)],
    session: SessionDep,
    storage: StorageDep,
    principal: PrincipalDep,
    request: Request,
) -> Response:
    job = _get_job(session, job_id, principal)
    image = next((im for im in job.masters if im.index == index), None)
    if image is None:
        raise HTTPException(
            404, detail=f"job {job_id} has no image {index} (status {job.status}, {len(job.masters)} image(s))"
        )
    return _image_response(job, image, storage, request)


@router.get(
    "/{job_id}/images/{index}/renditions/{name}",
    name="get_job_rendition",
    response_class=Response,
    responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}}},
)
def get_job_rendition(
    job_id: str,
    index: Annotated[int, FPath(ge=0, le=7)],
    name: Annotated[str, FPath(pattern=RENDITION_NAME)],
    session: SessionDep,
    storage: StorageDep,
    principal: PrincipalDep,
    request: Request,
) -> Response:
    job = _get_job(session, job_id, principal)
    image = next((r for r in job.renditions_of(index) if r.rendition == name), None)
    if image is None:
        made = ", ".join(sorted({r.rendition for r in job.images if r.rendition})) or "none"
        raise HTTPException(
            404, detail=f"job {job_id} has no rendition {name!r} of image {index} (status {job.status}; made: {made})"
        )
    return _image_response(job, image, storage, request)


def _image_response(job: Job, image: Image, storage: StorageDep, request: Request) -> Response:
    headers = {"ETag": f'"{image.sha256}"', "X-Image-Seed": str(image.seed)}
    what = f"job {job.id} image {image.index}" + (f" rendition {image.rendition!r}" if image.rendition else "")
    return stored_response(
        storage, image.storage_key, MEDIA_TYPES[image.format], headers, image.bytes, what, request.app.state.presign
    )
