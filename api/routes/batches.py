"""Catalog campaigns: a CSV/JSONL/JSON catalog plus a template becomes a batch of jobs."""

from __future__ import annotations

import json
from contextlib import nullcontext
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from sqlalchemy import select
from starlette.datastructures import UploadFile

from api import strict_json
from api.archive import archive_chunks
from api.auth import Principal, PrincipalDep
from api.batch_intake import Intake, accept_batch, preview_batch, request_fingerprint, scoped_key
from api.batch_reports import batch_jobs, batch_stats
from api.batch_schemas import (
    BatchCreate,
    BatchCreated,
    BatchList,
    BatchOptions,
    BatchOut,
    BatchPreview,
    BatchState,
    RetryOut,
)
from api.catalog_files import decode_utf8, detect_format, read_csv, read_json_rows, read_jsonl
from api.deps import SessionDep, StorageDep
from api.errors import refuse_invalid
from api.gc_pause import collection_paused
from api.manifest import ImageUrl, csv_chunks
from api.public_urls import base_url, url_for
from api.refusals import Problem, Refusal, refuse
from api.schemas import WebhookOut
from api.strict_json import JsonProblem
from api.strict_route import StrictRoute
from api.suggest import did_you_mean
from control.webhook_sweep import send_now
from core.settings import FarmSettings
from models import Batch, Image, Job, WebhookDelivery, lifecycle
from models.base import utcnow
from models.batch_stats import batch_state_is
from models.deliveries import reopen_batch_delivery
from models.lookup import AmbiguousId, find
from models.records import image_path

LARGE_CATALOG_BYTES = 1024 * 1024
router = APIRouter(prefix="/v1/batches", tags=["batches"], route_class=StrictRoute)
_FORM_FIELDS = set(BatchOptions.model_fields) | {"file", "file_format", "images"}
# form fields that carry JSON
_JSON_FIELDS = {"defaults": "a JSON object", "renditions": "a JSON list", "placement": "a JSON object"}
_UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "CSV (header row) or JSONL, UTF-8"},
        "file_format": {"type": "string", "enum": ["csv", "jsonl"], "description": "default: from the file name"},
        "defaults": {"type": "string", "description": 'JSON object, e.g. {"width": 768}'},
        "renditions": {"type": "string", "description": 'JSON list, e.g. [{"width": 512, "height": 512}]'},
        "images": {
            "type": "string",
            "format": "binary",
            "description": "a zip of input images: the column `image` (and `mask`) names a file in it",
        },
        "placement": {"type": "string", "description": 'JSON object, e.g. {"fit": 0.7, "anchor": "bottom"}'},
        **{name: {"type": "string"} for name in BatchOptions.model_fields if name not in _JSON_FIELDS},
    },
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchCreated,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": BatchCreate.model_json_schema(ref_template="#/components/schemas/{model}")
                },
                "multipart/form-data": {"schema": _UPLOAD_SCHEMA},
            },
        }
    },
    responses={
        200: {"model": BatchPreview, "description": "dry_run=true: the catalog is valid; nothing was written"},
        413: {"description": "file or row count over the limits"},
        409: {"description": "key reused"},
    },
)
async def create_batch(
    request: Request,
    response: Response,
    principal: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    dry_run: Annotated[
        bool, Query(description="check everything and preview the first prompts; write nothing")
    ] = False,
) -> BatchCreated | JSONResponse:
    """A JSON body with `rows`, or a multipart upload with `file` (CSV or JSONL) and the same fields."""
    # A large catalog is read with the collector paused (api/gc_pause.py): its full collections stall the loop.
    with collection_paused() if len(await request.body()) > LARGE_CATALOG_BYTES else nullcontext():
        return await _create_batch(request, response, principal, idempotency_key, dry_run)


async def _create_batch(
    request: Request, response: Response, principal: Principal, idempotency_key: str | None, dry_run: bool
) -> BatchCreated | JSONResponse:
    settings: FarmSettings = request.app.state.settings
    ctype = request.headers.get("content-type", "")
    images: bytes | None = None
    payload: bytes | list[Any]
    if ctype.startswith("multipart/form-data"):
        options, payload, source, images = await _upload(request)
    elif ctype.startswith("application/json"):
        # Parsed and validated in worker threads: a 36 MB catalog must not stall the event loop.
        options, payload, source = await run_in_threadpool(_json_body, await _json_document(request))
    else:
        raise HTTPException(415, detail=f"send application/json or multipart/form-data (got {ctype or 'none'!r})")
    if dry_run:  # the same checks as a real submission (every refusal, 422), then a preview instead of a batch
        preview = await run_in_threadpool(
            _accept, request, principal, settings, options, payload, source, None, images, True
        )
        return JSONResponse(jsonable_encoder(preview))
    batch, replayed = await run_in_threadpool(
        _accept, request, principal, settings, options, payload, source, idempotency_key, images
    )
    if not replayed:
        await run_in_threadpool(request.app.state.wake_dispatcher)  # a Redis call: off the event loop
        if options.callback_url is not None:  # every row reused: the batch is done already
            await run_in_threadpool(send_now, request.app.state.sessions, request.app.state.celery, batch_id=batch.id)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = url_for(request, "get_batch", batch_id=batch.id)
    return _created(batch, request)


def _accept(
    request: Request,
    principal: Principal,
    settings: FarmSettings,
    options: BatchOptions,
    payload: bytes | list[Any],
    source: str,
    idempotency_key: str | None,
    images: bytes | None = None,
    dry_run: bool = False,
) -> Any:
    try:
        if isinstance(payload, bytes):
            text = decode_utf8(payload)
            read = read_csv if source == "csv" else read_jsonl
            catalog = read(text, settings.max_batch_rows, settings.max_catalog_columns)
        else:
            catalog = read_json_rows(payload, settings.max_batch_rows, settings.max_catalog_columns)
        fingerprint = request_fingerprint(options, payload, images)
        intake = Intake(options, catalog, fingerprint, scoped_key(principal, idempotency_key), images)
        state = request.app.state
        with state.sessions() as session:
            if dry_run:
                return preview_batch(session, settings, principal, intake)
            return accept_batch(session, settings, principal, intake, state.quotas, state.storage)
    except Refusal as exc:
        raise exc.to_http() from exc


async def _json_document(request: Request) -> Any:
    try:
        return await request.json()  # strict (api/strict_route.py): off the loop when large
    except json.JSONDecodeError as exc:
        raise refuse(f"not valid JSON: {exc.msg}", field="body", line=exc.lineno).to_http() from exc


def _json_body(document: Any) -> tuple[BatchOptions, list[Any], str]:
    try:
        parsed = BatchCreate.model_validate(document)
    except ValidationError as exc:
        raise refuse_invalid(exc, BatchCreate) from exc
    options = BatchOptions.model_validate(parsed.model_dump(exclude={"rows"}))
    return options, parsed.rows, "json"


async def _upload(request: Request) -> tuple[BatchOptions, bytes, str, bytes | None]:
    form = await request.form(max_files=2, max_fields=len(_FORM_FIELDS) + 1)
    unknown = sorted(set(form.keys()) - _FORM_FIELDS)
    if unknown:
        raise Refusal(
            [
                Problem(f"unknown form field: not part of this request{did_you_mean(n, _FORM_FIELDS)}", field=n)
                for n in unknown
            ]
        ).to_http()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise refuse("send the catalog as a file part named 'file'", field="file").to_http()
    fields: dict[str, Any] = {k: v for k, v in form.items() if k in BatchOptions.model_fields and isinstance(v, str)}
    for name, shape in _JSON_FIELDS.items():
        if name not in fields:
            continue
        try:
            fields[name] = strict_json.loads(fields[name])
        except JsonProblem as exc:
            raise refuse(
                exc.rule, field=f"{name}.{exc.where}".removesuffix(".body"), value=exc.value
            ).to_http() from exc
        except ValueError as exc:
            raise refuse(f"must be {shape}: {exc}", field=name, value=fields[name]).to_http() from exc
    try:
        options = BatchOptions.model_validate(fields)
    except ValidationError as exc:
        raise refuse_invalid(exc, BatchOptions) from exc
    declared = form.get("file_format")
    if declared is not None and declared not in ("csv", "jsonl"):
        raise refuse("must be csv or jsonl", field="file_format", value=str(declared)).to_http()
    try:
        source = detect_format(upload.filename, declared if isinstance(declared, str) else None)
    except Refusal as exc:
        raise exc.to_http() from exc
    images = form.get("images")
    if images is not None and not isinstance(images, UploadFile):
        raise refuse("send the images as a zip file part named 'images'", field="images").to_http()
    return options, await upload.read(), source, await images.read() if images is not None else None


def _created(batch: Batch, request: Request) -> BatchCreated:
    # Built from the stored row alone, so a replay with the same Idempotency-Key gets the same body.
    return BatchCreated(
        id=batch.id,
        name=batch.name,
        rows=batch.rows,
        jobs_created=batch.rows,
        jobs_reused=batch.jobs_reused,
        jobs_queued=batch.rows - batch.jobs_reused,
        seed=batch.seed,
        **_urls(batch, request),
    )


def _urls(batch: Batch, request: Request) -> dict[str, str]:
    return {
        "url": url_for(request, "get_batch", batch_id=batch.id),
        "manifest_url": url_for(request, "get_batch_manifest", batch_id=batch.id),
        "archive_url": url_for(request, "get_batch_archive", batch_id=batch.id),
    }


def _get_batch(session: SessionDep, batch_id: str, principal: Principal) -> Batch:
    try:
        batch = find(session, Batch, batch_id, principal.tenant)  # an id or a unique prefix of one
    except AmbiguousId as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    if batch is None:
        raise HTTPException(404, detail=f"batch {batch_id!r} not found")
    return batch


def batch_out(session: SessionDep, batch: Batch, request: Request) -> BatchOut:
    stats = batch_stats(session, batch.id)
    delivery = session.scalar(
        select(WebhookDelivery).where(WebhookDelivery.batch_id == batch.id).order_by(WebhookDelivery.created_at.desc())
    )
    return BatchOut(
        id=batch.id,
        name=batch.name,
        created_by=batch.tenant,
        status=stats.state(batch),
        template=batch.template,
        key_column=batch.key_column,
        preset=batch.preset,
        defaults=batch.defaults,
        renditions=batch.renditions or [],
        seed=batch.seed,
        dedup=batch.dedup,
        source=batch.source,
        rows=batch.rows,
        counts=stats.counts,
        done=stats.done,
        progress=stats.done / stats.total if stats.total else 1.0,
        images_done=stats.images_done,
        jobs_reused=batch.jobs_reused,
        gpu_seconds=stats.gpu_seconds,
        eta_seconds=stats.eta_seconds,
        created_at=batch.created_at,
        canceled_at=batch.canceled_at,
        callback_url=delivery.url if delivery else None,
        webhook=WebhookOut.model_validate(delivery, from_attributes=True) if delivery else None,
        **_urls(batch, request),
    )


@router.get("", response_model=BatchList)
def list_batches(
    session: SessionDep,
    request: Request,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    status: BatchState | None = None,
) -> BatchList:
    """Recent batches, newest first; `status` keeps those in one state (active, succeeded, failed, canceled)."""
    query = select(Batch).order_by(Batch.created_at.desc()).limit(limit)
    if status is not None:
        query = query.where(batch_state_is(status))
    if principal.tenant is not None:
        query = query.where(Batch.tenant == principal.tenant)
    return BatchList(batches=[batch_out(session, b, request) for b in session.scalars(query)])


@router.get("/{batch_id}", response_model=BatchOut, name="get_batch")
def get_batch(batch_id: str, session: SessionDep, request: Request, principal: PrincipalDep) -> BatchOut:
    return batch_out(session, _get_batch(session, batch_id, principal), request)


@router.get(
    "/{batch_id}/manifest.csv",
    name="get_batch_manifest",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def get_batch_manifest(batch_id: str, session: SessionDep, request: Request, principal: PrincipalDep) -> Response:
    batch = _get_batch(session, batch_id, principal)
    chunks = csv_chunks(batch_jobs(request.app.state.sessions, batch.id), _image_url(request))
    return StreamingResponse(
        (c.encode("utf-8") for c in chunks),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="batch-{batch.id}-manifest.csv"'},
    )


@router.get(
    "/{batch_id}/archive.zip",
    name="get_batch_archive",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
def get_batch_archive(
    batch_id: str,
    session: SessionDep,
    request: Request,
    storage: StorageDep,
    principal: PrincipalDep,
    approved: Annotated[bool, Query(description="true: only the rows approved in review")] = False,
) -> Response:
    batch = _get_batch(session, batch_id, principal)
    jobs = batch_jobs(request.app.state.sessions, batch.id, approved_only=approved)
    chunks = archive_chunks(jobs, storage, _image_url(request))
    return StreamingResponse(
        chunks,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="batch-{batch.id}.zip"'},
    )


def _image_url(request: Request) -> ImageUrl:
    base = base_url(request).rstrip("/")
    presign = request.app.state.presign  # ZFARM_PRESIGNED_URLS=true: links into the bucket, signed locally

    def url(image: Image) -> str:
        return (presign(image.storage_key) if presign else None) or base + image_path(
            image.job_id, image.index, image.rendition
        )

    return url


@router.post("/{batch_id}/retry-failed", response_model=RetryOut)
def retry_failed(batch_id: str, session: SessionDep, request: Request, principal: PrincipalDep) -> RetryOut:
    """Queues the batch's failed and dead jobs again, with their attempts counted from zero.

    Attempts restart because the cap counts deliveries of one submission: a dead job has used them all,
    and without a reset its next delivery would be marked dead again without running. Succeeded,
    canceled, queued and running jobs are left as they are.
    """
    batch = _get_batch(session, batch_id, principal)
    requeued = lifecycle.retry(session, Job.batch_id == batch.id)
    if requeued:
        reopen_batch_delivery(session, batch.id)  # it will finish again: announce that ending too
    session.commit()
    request.app.state.wake_dispatcher()
    return RetryOut(batch_id=batch.id, requeued=requeued)


@router.delete("/{batch_id}", response_model=BatchOut)
def cancel_batch(batch_id: str, session: SessionDep, request: Request, principal: PrincipalDep) -> BatchOut:
    """Cancels every job of the batch that has not started; running jobs finish."""
    batch = _get_batch(session, batch_id, principal)
    lifecycle.cancel(session, Job.batch_id == batch.id, error="canceled with its batch before it ran", only_queued=True)
    batch.canceled_at = batch.canceled_at or utcnow()
    session.commit()
    send_now(request.app.state.sessions, request.app.state.celery, batch_id=batch.id)  # if nothing still runs
    return batch_out(session, batch, request)
