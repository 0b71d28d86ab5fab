"""Running one job: claim the row, render without holding a transaction, store, record. Plain functions."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import delete, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from models import Image, Job, JobStatus, Worker
from models.base import utcnow
from models.db import transaction
from models.jobs import FINAL_STATUSES
from worker.images import encode_image
from worker.progress import report_progress
from worker.recovery import render_with_recovery
from worker.render import RenderCanceled, RenderError, RenderRequest, StepCallback
from worker.runtime import Runtime
from zfarm.storage import Storage, image_key
from zfarm.token_window import MAX_TOKENS

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    """What one worker process brings to every job."""

    name: str
    runtime: Runtime
    sessions: sessionmaker[Session]
    storage: Storage
    max_attempts: int
    offline_after_seconds: float
    time_limit_seconds: int = 0


def run_job(job_id: str, ctx: JobContext) -> str:
    """Returns the outcome: succeeded, failed, canceled, dead, skipped or missing."""
    claimed = claim_job(job_id, ctx)
    if isinstance(claimed, str):
        log.info("job %s not run: %s", job_id, claimed)
        return claimed
    if (too_long := _over_token_window(claimed, ctx)) is not None:
        return finish_without_images(job_id, ctx, JobStatus.FAILED, too_long)
    started = time.perf_counter()
    try:
        on_step = report_progress(job_id, ctx.sessions, _cancel_check(job_id, ctx))
        images, notes = render_with_recovery(ctx.runtime, claimed, on_step=on_step)
    except RenderCanceled:
        return finish_without_images(job_id, ctx, JobStatus.CANCELED, "canceled while running")
    except SoftTimeLimitExceeded:
        return finish_without_images(
            job_id, ctx, JobStatus.FAILED, f"exceeded the time limit of {ctx.time_limit_seconds} s per job"
        )
    except (RenderError, ValueError) as exc:
        return finish_without_images(job_id, ctx, JobStatus.FAILED, f"{type(exc).__name__}: {exc}")
    gpu_seconds = time.perf_counter() - started
    store_results(job_id, ctx, claimed, images, gpu_seconds, notes)
    return JobStatus.SUCCEEDED


def claim_job(job_id: str, ctx: JobContext) -> RenderRequest | str:
    with transaction(ctx.sessions) as s:
        job = s.get(Job, job_id)
        if job is None:
            return "missing"
        if job.status in FINAL_STATUSES:
            return "skipped"
        if job.status == JobStatus.RUNNING and job.worker_name != ctx.name and _alive(s, job.worker_name, ctx):
            return "skipped"  # a duplicate delivery while a live worker runs it
        if job.cancel_requested:
            job.status, job.finished_at, job.error = JobStatus.CANCELED, utcnow(), "canceled before it ran"
            return "canceled"
        if job.attempts >= ctx.max_attempts:
            job.status, job.finished_at = JobStatus.DEAD, utcnow()
            job.error = f"gave up after {job.attempts} attempts (cap {ctx.max_attempts}); last error: {job.error}"
            return JobStatus.DEAD
        # Compare-and-set on (status, attempts): of two deliveries racing here, one wins.
        rt = ctx.runtime
        won = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == job.status, Job.attempts == job.attempts)
            .values(
                status=JobStatus.RUNNING,
                attempts=job.attempts + 1,
                started_at=utcnow(),
                worker_name=ctx.name,
                device_name=rt.device_name,
                memory_policy=rt.policy,
                model_id=rt.source.model_id if rt.source else rt.model,
                model_revision=rt.source.revision if rt.source else rt.revision,
                versions=rt.versions(),
                error=None,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if won != 1:
            return "skipped"
        s.execute(update(Worker).where(Worker.name == ctx.name).values(state="busy", current_job_id=job_id))
        return RenderRequest(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            width=job.width,
            height=job.height,
            steps=job.steps,
            guidance_scale=job.guidance_scale,
            seeds=[job.image_seed(i) for i in range(job.num_images)],
            extra={"format": job.output_format, "quality": job.quality, "truncate_prompt": job.truncate_prompt},
        )


def _over_token_window(req: RenderRequest, ctx: JobContext) -> str | None:
    # The API refuses these when it has the tokenizer; this is the check for when it does not.
    if req.extra.get("truncate_prompt"):
        return None
    for field, text in (("prompt", req.prompt), ("negative_prompt", req.negative_prompt)):
        if text and (n := ctx.runtime.prompt_tokens(text)) > MAX_TOKENS:
            return f"{field} is {n} tokens with the chat template; the text encoder reads at most {MAX_TOKENS}"
    return None


def _alive(s: Session, worker_name: str | None, ctx: JobContext) -> bool:
    if worker_name is None:
        return False
    beat = s.scalar(select(Worker.last_heartbeat).where(Worker.name == worker_name))
    return beat is not None and utcnow() - beat < timedelta(seconds=ctx.offline_after_seconds)


CANCEL_POLL_SECONDS = 0.5


def _cancel_check(job_id: str, ctx: JobContext) -> StepCallback:
    # At most two database reads a second: a step on a GPU is ~0.1 s and must not wait on SQL each time.
    last = [0.0]

    def on_step(step: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < CANCEL_POLL_SECONDS:
            return
        last[0] = now
        try:
            with ctx.sessions() as s:
                canceled = s.scalar(select(Job.cancel_requested).where(Job.id == job_id))
        except OperationalError:
            return  # the database is restarting: keep rendering, the next poll asks again
        if canceled:
            raise RenderCanceled(job_id)

    return on_step


def generation_parameters(req: RenderRequest, seed: int, ctx: JobContext) -> dict[str, Any]:
    src = ctx.runtime.source
    return {
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "seed": seed,
        "width": req.width,
        "height": req.height,
        "steps": req.steps,
        "guidance_scale": req.guidance_scale,
        "model": src.model_id if src else ctx.runtime.model,
        "model_revision": src.revision if src else None,
        "test_model_noise": ctx.runtime.is_test_model,
    }


def store_results(
    job_id: str, ctx: JobContext, req: RenderRequest, images: list, gpu_seconds: float, notes: list[str]
) -> None:
    fmt, quality = str(req.extra["format"]), int(req.extra["quality"])  # type: ignore[arg-type]
    rows = []
    for index, (image, seed) in enumerate(zip(images, req.seeds, strict=True)):
        encoded = encode_image(image, fmt, quality, generation_parameters(req, seed, ctx))
        key = image_key(job_id, index, fmt)
        ctx.storage.put(key, encoded.data)
        rows.append(
            Image(
                job_id=job_id,
                index=index,
                seed=seed,
                width=image.width,
                height=image.height,
                format=fmt,
                sha256=encoded.sha256,
                bytes=len(encoded.data),
                storage_key=key,
            )
        )
    with transaction(ctx.sessions) as s:
        # A rerun replaces the rows of an earlier attempt: one set of images per job, never two.
        s.execute(delete(Image).where(Image.job_id == job_id))
        s.add_all(rows)
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status=JobStatus.SUCCEEDED,
                finished_at=utcnow(),
                gpu_seconds=gpu_seconds,
                error=None,
                recovery="; ".join(notes) or None,
            )
        )
        _worker_done(s, ctx)


def finish_without_images(job_id: str, ctx: JobContext, status: JobStatus, error: str) -> str:
    with transaction(ctx.sessions) as s:
        s.execute(update(Job).where(Job.id == job_id).values(status=status, finished_at=utcnow(), error=error))
        _worker_done(s, ctx)
    return status


def _worker_done(s: Session, ctx: JobContext) -> None:
    s.execute(
        update(Worker)
        .where(Worker.name == ctx.name)
        .values(state="ready", current_job_id=None, jobs_done=Worker.jobs_done + 1, last_heartbeat=utcnow())
    )
