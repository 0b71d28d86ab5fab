"""Accepting a catalog: validate every row, then write the batch, its jobs and any reused images at once.

Nothing is written unless every row is valid. Rows go in with one executemany per table (SQLAlchemy's
insertmanyvalues), never one round trip per row; no job id is sent to Redis here: bulk jobs wait in SQL
and the dispatcher (`control.dispatcher`) feeds them to the bulk queue by turns between batches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.auth import Principal
from api.batch_images import resolve_rows
from api.batch_schemas import BatchOptions, BatchPreview, PreviewRow
from api.callbacks import callback_problem
from api.catalog_files import Catalog
from api.catalog_rows import JobSpec, RowRules, build_jobs
from api.image_modes import IMAGE_FIELDS, ResolvedMode
from api.job_identity import content_hash
from api.prompt_template import parse_template
from api.refusals import Problems, Refusal, refuse
from api.schemas import JobCreate
from api.suggest import did_you_mean
from core.settings import FarmSettings
from core.storage import Storage
from core.token_window import load_tokenizer
from models import Batch, Image, Job, JobStatus, Lane, PromptTemplate, WebhookDelivery, lifecycle
from models.base import new_id, utcnow
from models.dedup import copied_images, find_reusable, reused_values
from models.loras import signature, visible


@dataclass(frozen=True)
class Intake:
    options: BatchOptions
    catalog: Catalog
    request_sha256: str
    idempotency_key: str | None  # already scoped to the tenant
    images: bytes | None = None  # an upload's `images` zip (issue 12)


def request_fingerprint(options: BatchOptions, payload: bytes | list[Any], images: bytes | None = None) -> str:
    """Same options and same rows give the same fingerprint, whatever the multipart boundary or key order."""
    digest = hashlib.sha256(options.model_dump_json().encode())
    if isinstance(payload, bytes):
        digest.update(payload)
    else:
        # The bytes of json.dumps(payload, sort_keys=True), a row at a time: one call over a 36 MB catalog holds
        # the GIL (and so the event loop) for its whole length.
        digest.update(b"[")
        for i, row in enumerate(payload):
            digest.update(b", " if i else b"")
            digest.update(json.dumps(row, sort_keys=True).encode())
        digest.update(b"]")
    if images is not None:
        digest.update(b"images" + hashlib.sha256(images).digest())
    return digest.hexdigest()


def scoped_key(principal: Principal, key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 150 or not key.isprintable():
        raise refuse("must be 1 to 150 printable characters", field="Idempotency-Key", value=key[:160])
    return f"{principal.tenant or ''}:{key}"


def replayed_batch(session: Session, intake: Intake) -> Batch | None:
    """The batch an earlier request with this Idempotency-Key made, if any; a different request is refused."""
    if intake.idempotency_key is None:
        return None
    batch = session.scalar(select(Batch).where(Batch.idempotency_key == intake.idempotency_key))
    if batch is not None and batch.request_sha256 != intake.request_sha256:
        raise refuse(
            "this Idempotency-Key was used for a different batch request; use a new key for new content",
            field="Idempotency-Key",
            status_code=409,
        )
    return batch


def accept_batch(
    session: Session, settings: FarmSettings, principal: Principal, intake: Intake, quotas: Any, storage: Storage
) -> tuple[Batch, bool]:
    """Returns the batch and whether it is a replay of an earlier request with the same Idempotency-Key."""
    if (earlier := replayed_batch(session, intake)) is not None:
        return earlier, True
    opts = intake.options
    if (bad_callback := callback_problem(opts.callback_url, settings)) is not None:
        value, rule = bad_callback
        raise refuse(rule, field="callback_url", value=value)
    problems = Problems()  # every problem of the request at once: options, columns, rows
    rules = _row_rules(session, settings, principal, opts, problems)
    tokenizer = load_tokenizer(settings.model, settings.model_revision)
    specs = build_jobs(intake.catalog, rules, tokenizer, problems)
    images = resolve_rows(session, settings, principal.tenant, specs, intake.images)
    quotas.check_submit(session, principal, new_jobs=len(specs))
    batch = Batch(
        id=new_id(),
        tenant=principal.tenant,
        name=opts.name or f"batch of {len(specs)}",
        template=rules.template.text,
        key_column=opts.key_column,
        defaults=opts.defaults.parameters() or None,
        preset=rules.preset,
        renditions=[r.model_dump() for r in opts.renditions] or None,
        seed=opts.seed,
        dedup=opts.dedup,
        source=intake.catalog.source,
        rows=len(specs),
        idempotency_key=intake.idempotency_key,
        request_sha256=intake.request_sha256,
        created_at=(now := utcnow()),
    )
    job_rows, image_rows = _rows(session, settings, principal, batch, specs, images.resolved)
    batch.jobs_reused = sum(1 for r in job_rows if r["status"] == JobStatus.SUCCEEDED)
    session.add(batch)
    if opts.callback_url is not None:
        # The outbox row is written with the batch, so its ending can never be missed.
        session.add(WebhookDelivery(batch_id=batch.id, url=str(opts.callback_url), created_at=now, updated_at=now))
    try:
        session.flush()
        images.store(session, storage)  # the new input images, with their files: before the jobs that use them
        session.execute(insert(Job), job_rows)
        if image_rows:
            session.execute(insert(Image), image_rows)
        session.commit()
    except IntegrityError:
        # Two requests with one Idempotency-Key raced: the other one won; answer with its batch.
        session.rollback()
        if (earlier := replayed_batch(session, intake)) is not None:
            return earlier, True
        raise
    return batch, False


PREVIEW_ROWS = 10


def preview_batch(session: Session, settings: FarmSettings, principal: Principal, intake: Intake) -> BatchPreview:
    """Every check of accept_batch (raising the same refusals), then what the batch would be; writes nothing."""
    opts = intake.options
    if (bad_callback := callback_problem(opts.callback_url, settings)) is not None:
        value, rule = bad_callback
        raise refuse(rule, field="callback_url", value=value)
    problems = Problems()
    rules = _row_rules(session, settings, principal, opts, problems)
    specs = build_jobs(intake.catalog, rules, load_tokenizer(settings.model, settings.model_revision), problems)
    hashes = [content_hash(s.params, settings.model, settings.model_revision) for s in specs]
    reused = len(find_reusable(session, hashes, principal.tenant, settings.model)) if opts.dedup else 0
    fields = ("prompt", "negative_prompt", "width", "height", "seed", "output_format")
    shown = [
        PreviewRow(
            key=s.key, row=s.row, adjustments=s.params.get("adjustments") or [], **{f: s.params[f] for f in fields}
        )
        for s in specs[:PREVIEW_ROWS]
    ]
    return BatchPreview(rows=len(specs), jobs_reused=reused, jobs_queued=len(specs) - reused, preview=shown)


def _saved_template(session: Session, principal: Principal, name: str) -> PromptTemplate:
    row = session.scalar(
        select(PromptTemplate).where(PromptTemplate.tenant == (principal.tenant or ""), PromptTemplate.name == name)
    )
    if row is None:
        names = session.scalars(select(PromptTemplate.name).where(PromptTemplate.tenant == (principal.tenant or "")))
        rule = "no saved template by this name (see GET /v1/templates)" + did_you_mean(name, names)
        raise refuse(rule, field="template_name", value=name)
    return row


def _row_rules(
    session: Session, settings: FarmSettings, principal: Principal, opts: BatchOptions, problems: Problems
) -> RowRules:
    """The batch's rules; an unknown preset is noted in `problems` (and left out) so the rows are checked too."""
    presets = settings.all_presets
    saved = _saved_template(session, principal, opts.template_name) if opts.template_name else None
    preset = opts.preset or (saved.preset if saved else None)
    if preset is not None and preset not in presets:
        rule = f"unknown preset: known presets are {', '.join(sorted(presets))}" + did_you_mean(preset, presets)
        problems.add(rule, field="preset", value=preset)
        preset = None
    try:
        template = parse_template(opts.template if opts.template is not None else saved.template)  # type: ignore[union-attr]
    except Refusal as exc:  # without a template the rows cannot be checked: refuse with what is known
        problems.items.extend(exc.problems)
        problems.raise_if_any()
        raise
    # job defaults < batch preset < saved template's negative prompt < batch defaults
    skip = {"prompt", "seed", "dedup", "truncate_prompt", "preset", "enhance"}
    base = JobCreate(prompt="-").model_dump(exclude=skip)
    base.update(presets[preset].parameters() if preset else {})
    if saved is not None and saved.negative_prompt:
        base["negative_prompt"] = saved.negative_prompt
    base.update(opts.defaults.parameters())
    base["renditions"] = [r.model_dump() for r in opts.renditions]
    base["precision"] = opts.precision
    base.update(opts.model_dump(include=set(IMAGE_FIELDS) - {"image", "mask"}))
    return RowRules(
        template=template,
        key_column=opts.key_column,
        base=base,
        presets=presets,
        batch_seed=opts.seed,
        max_pixels=settings.max_pixels,
        truncate_prompt=opts.truncate_prompt,
        preset=preset,
        adapters=visible(session, principal.tenant),
        slot_rank=settings.lora_slot_rank,
        enhance=opts.enhance,
        default_negative=settings.default_negative_prompt,
    )


def _rows(
    session: Session,
    settings: FarmSettings,
    principal: Principal,
    batch: Batch,
    specs: list[JobSpec],
    modes: list[ResolvedMode],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    asked = [
        {**s.params, "width": m.width, "height": m.height, **m.identity()} for s, m in zip(specs, modes, strict=True)
    ]
    hashes = [content_hash(a, settings.model, settings.model_revision) for a in asked]
    reusable = find_reusable(session, hashes, principal.tenant, settings.model) if batch.dedup else {}
    now = utcnow()
    jobs: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    for spec, mode, digest in zip(specs, modes, hashes, strict=True):
        row = {
            **{k: v for k, v in spec.params.items() if k not in IMAGE_FIELDS},
            **mode.columns(),
            "id": new_id(),
            "tenant": principal.tenant,
            "attempts": 0,
            "cancel_requested": False,
            "created_at": now,
            "batch_id": batch.id,
            "item_key": spec.key,
            "row_number": spec.row,
            "lane": Lane.BULK,
            "content_hash": digest,
            "dedup": batch.dedup,
            "renditions": spec.params.get("renditions") or None,
            "loras": spec.params.get("loras") or None,
            "adapters": signature(spec.params.get("loras") or []),
            "started_at": None,
            "finished_at": None,
            "gpu_seconds": None,
            "reused_from": None,
            **{name: None for name in ("worker_name", "device_name", "memory_policy", "model_id")},
            **{name: None for name in ("model_revision", "versions", "recovery")},
        }
        original = reusable.get(digest)
        row.update(lifecycle.born_row(reused_values(original) if original else None, now))
        if original is not None:
            images.extend(copied_images(original, row["id"]))
        jobs.append(row)
    return jobs, images
