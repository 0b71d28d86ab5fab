"""Running one job: claim the row, render without holding a transaction, store, record. Plain functions."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.storage import Storage, image_key
from core.token_window import MAX_TOKENS
from models import Image, Job, JobStatus, Worker, lifecycle
from models.base import utcnow
from models.db import transaction
from models.dedup import copied_images, find_reusable, reused_values
from models.lifecycle import Outcome
from models.loras import lora_parameters, prompt_with_triggers
from models.statuses import FINAL_STATUSES
from worker.batching import batch_limit, claim_companions, split_seconds
from worker.finishing import Finisher
from worker.image_inputs import InputError, input_spec, with_inputs
from worker.images import encode_image
from worker.progress import report_progress
from worker.recovery import render_many_with_recovery
from worker.render import RenderCanceled, RenderError, RenderRequest, StepCallback
from worker.renditions import make_rendition
from worker.runtime import Runtime

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
    # Throughput (issue 5): compatible queued jobs rendered together; finishing overlapped with the next render.
    batch_max_images: int = 1
    batch_max_pixels: int = 4 * 1024 * 1024
    finisher: Finisher = dataclasses.field(default_factory=lambda: Finisher(0))
    # Jobs this process claimed and has not yet recorded (a finisher thread may still be storing them).
    in_flight: set[str] = dataclasses.field(default_factory=set)
    # Called with a job id once its ending is recorded (webhooks: the job's and, after its last job, its batch's).
    notify: Callable[[str], None] | None = None


def run_job(job_id: str, ctx: JobContext) -> Outcome:
    """Runs one delivery of a job; says what it came to."""
    claimed = _claim(job_id, ctx)
    if isinstance(claimed, Outcome):
        log.info("job %s not run: %s", job_id, claimed)
        return claimed
    if (too_long := _over_token_window(claimed, ctx)) is not None:
        return finish_without_images(job_id, ctx, JobStatus.FAILED, too_long)
    try:
        claimed = with_inputs(claimed, ctx.storage)  # image modes: read from storage, never a client's URL
    except InputError as exc:
        return finish_without_images(job_id, ctx, JobStatus.FAILED, f"InputError: {exc}")
    if claimed.extra.get("attempt", 1) > 1:
        # A retry may be what crashed the last process: the previous jobs' images are stored before it runs,
        # so a second crash does not cost them an attempt too.
        ctx.finisher.wait_idle()
    group = [(job_id, claimed), *_companions(job_id, claimed, ctx)]
    ids, reqs = [j for j, _ in group], [r for _, r in group]
    started = time.perf_counter()
    try:
        images, notes = render_many_with_recovery(ctx.runtime, reqs, on_step=_on_step(ids, ctx))
    except RenderCanceled:
        return _finish_all(ids, ctx, JobStatus.CANCELED, "canceled while running")
    except SoftTimeLimitExceeded:
        return _finish_all(ids, ctx, JobStatus.FAILED, f"exceeded the time limit of {ctx.time_limit_seconds} s per job")
    except (RenderError, ValueError) as exc:
        if len(group) > 1:  # one bad job must not fail its companions: each again, alone
            return [_run_alone(one, req, ctx) for one, req in group][0]
        return finish_without_images(job_id, ctx, JobStatus.FAILED, f"{type(exc).__name__}: {exc}")
    seconds = split_seconds(time.perf_counter() - started, reqs)
    _log_stats(ids, reqs, seconds, ctx)
    for (one, req), imgs, gpu_seconds in zip(group, images, seconds, strict=True):
        ctx.finisher.submit(partial(finish_rendered, one, ctx, req, imgs, gpu_seconds, notes, len(group) > 1))
    return Outcome.RENDERED


def _companions(job_id: str, leader: RenderRequest, ctx: JobContext) -> list[tuple[str, RenderRequest]]:
    if leader.extra.get("attempt", 1) > 1:
        return []  # a job retried after a crash runs alone: a poison job must not take its batch-mates down again
    if leader.inputs is not None:
        return []  # an image job renders alone: its inputs are its own (worker/image_render.py)
    limit = batch_limit(leader, ctx.batch_max_images, ctx.batch_max_pixels)
    chosen = []
    for one, req in claim_companions(job_id, leader, ctx.sessions, limit, lambda other: _claim(other, ctx)):
        if (too_long := _over_token_window(req, ctx)) is not None:
            finish_without_images(one, ctx, JobStatus.FAILED, too_long)
        else:
            chosen.append((one, req))
    return chosen


def _run_alone(job_id: str, req: RenderRequest, ctx: JobContext) -> Outcome:
    started = time.perf_counter()
    try:
        [images], notes = render_many_with_recovery(ctx.runtime, [req], on_step=_on_step([job_id], ctx))
    except RenderCanceled:
        return finish_without_images(job_id, ctx, JobStatus.CANCELED, "canceled while running")
    except (RenderError, ValueError) as exc:
        return finish_without_images(job_id, ctx, JobStatus.FAILED, f"{type(exc).__name__}: {exc}")
    # The same storing as every job: a store that refuses the write fails this job with its reason.
    finish_rendered(job_id, ctx, req, images, time.perf_counter() - started, notes, batched=False)
    return Outcome.RENDERED


def _on_step(ids: list[str], ctx: JobContext) -> StepCallback:
    # Every job of the call reports the shared denoising step; the cancel check runs once for all of them.
    on_step = _cancel_check(ids, ctx)
    for one in reversed(ids):
        on_step = report_progress(one, ctx.sessions, on_step)
    return on_step


def _finish_all(ids: list[str], ctx: JobContext, status: JobStatus, error: str) -> Outcome:
    return [finish_without_images(one, ctx, status, error) for one in ids][0]


def _log_stats(ids: list[str], reqs: list[RenderRequest], seconds: list[float], ctx: JobContext) -> None:
    # One line per pipeline call; the benchmark reads peak VRAM and the compiled-graph counter from it.
    stats = {"jobs": len(ids), "images": sum(r.num_images for r in reqs), "gpu_s": round(sum(seconds), 4)}
    log.info("rendered %s zfarm-stats %s", ",".join(ids), json.dumps({**stats, **ctx.runtime.stats()}))


def finish_rendered(
    job_id: str,
    ctx: JobContext,
    req: RenderRequest,
    images: list,
    gpu_seconds: float,
    notes: list[str],
    batched: bool,
) -> None:
    """Encode, store and record one rendered job (on a finisher thread); a failure is recorded, never lost."""
    for attempt in range(3):
        try:
            if batched and _cancel_requested(job_id, ctx):  # canceled while its batch rendered
                finish_without_images(job_id, ctx, JobStatus.CANCELED, "canceled while running")
            else:
                store_results(job_id, ctx, req, images, gpu_seconds, notes)
            return
        except OperationalError:  # the database is away for a moment: try again, as the task would
            log.warning("database unavailable while storing job %s (attempt %d)", job_id, attempt + 1)
            time.sleep(5)
        except (OSError, ValueError) as exc:
            finish_without_images(job_id, ctx, JobStatus.FAILED, f"storing failed: {type(exc).__name__}: {exc}")
            return
    # Left running on a live worker: the reconciler fails it past the hard time limit (fail_overdue).
    log.error("job %s rendered but not recorded: the database stayed unavailable", job_id)


def _cancel_requested(job_id: str, ctx: JobContext) -> bool:
    with ctx.sessions() as s:
        return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def _claim(job_id: str, ctx: JobContext) -> RenderRequest | Outcome:
    claimed = claim_job(job_id, ctx)
    if claimed in (Outcome.CANCELED, Outcome.DEAD, Outcome.REUSED):
        _notify(job_id, ctx)  # it ended here, at the claim
    return claimed


def claim_job(job_id: str, ctx: JobContext) -> RenderRequest | Outcome:
    with transaction(ctx.sessions) as s:
        job = s.get(Job, job_id)
        if job is None:
            return Outcome.MISSING
        if job.status in FINAL_STATUSES:
            return Outcome.SKIPPED
        if job.status == JobStatus.RUNNING and job.worker_name != ctx.name and _alive(s, job.worker_name, ctx):
            return Outcome.SKIPPED  # a duplicate delivery while a live worker runs it
        if job.status == JobStatus.RUNNING and job_id in ctx.in_flight:
            return Outcome.SKIPPED  # rendered here (in a batch) and being stored by a finisher thread
        if job.precision != ctx.runtime.precision:
            # Misrouted (e.g. a worker restarted with another precision): left queued; the reconciler sees its
            # message gone and sends it again, to its own tier's queue.
            log.warning(
                "job %s asks for %s, this worker runs %s: not taken", job_id, job.precision, ctx.runtime.precision
            )
            return Outcome.SKIPPED
        if job.cancel_requested:
            ended = lifecycle.cancel(s, Job.id == job.id, Job.status == job.status, error="canceled before it ran")
            return Outcome.CANCELED if ended else Outcome.SKIPPED
        if job.attempts >= ctx.max_attempts:
            error = f"gave up after {job.attempts} attempts (cap {ctx.max_attempts}); last error: {job.error}"
            return Outcome.DEAD if lifecycle.kill(s, job, error) else Outcome.SKIPPED
        if _reuse_finished(s, job, ctx):
            return Outcome.REUSED
        rt = ctx.runtime
        won = lifecycle.claim(
            s,
            job,
            worker_name=ctx.name,
            device_name=rt.device_name,
            memory_policy=rt.policy,
            model_id=rt.source.model_id if rt.source else rt.model,
            model_revision=rt.source.revision if rt.source else rt.revision,
            versions=rt.versions(),
        )
        if not won:
            return Outcome.SKIPPED
        ctx.in_flight.add(job_id)
        s.execute(update(Worker).where(Worker.name == ctx.name).values(state="busy", current_job_id=job_id))
        return RenderRequest(
            # With add_trigger_words the adapters' trigger words lead the prompt the encoder reads.
            prompt=prompt_with_triggers(job.prompt, job.loras) if job.add_trigger_words else job.prompt,
            negative_prompt=job.negative_prompt,
            width=job.width,
            height=job.height,
            steps=job.steps,
            guidance_scale=job.guidance_scale,
            seeds=[job.image_seed(i) for i in range(job.num_images)],
            extra={
                "format": job.output_format,
                "quality": job.quality,
                "truncate_prompt": job.truncate_prompt,
                "renditions": job.renditions or [],
                "loras": job.loras or [],
                "attempt": job.attempts + 1,
                "precision": job.precision,
                "inputs": input_spec(job),
            },
        )


def _reuse_finished(s: Session, job: Job, ctx: JobContext) -> bool:
    """Done without rendering when a twin (same content hash, tenant and model) succeeded since it was queued.

    The API reuses what had finished at submission; this catches a twin that was still queued or running
    then, e.g. a catalog sent twice in a row. The same compare-and-set as a claim: one delivery wins.
    """
    if not job.dedup or job.content_hash is None:
        return False
    rt = ctx.runtime
    model = rt.source.model_id if rt.source else rt.model
    original = find_reusable(s, [job.content_hash], job.tenant, model).get(job.content_hash)
    if original is None or original.id == job.id:
        return False
    if not lifecycle.reuse(s, job, reused_values(original)):
        return False
    s.execute(delete(Image).where(Image.job_id == job.id))  # a requeued job may hold an earlier attempt's rows
    s.execute(insert(Image), copied_images(original, job.id))
    log.info("job %s reuses the images of job %s (same content hash)", job.id, original.id)
    return True


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


def _cancel_check(job_ids: list[str], ctx: JobContext) -> StepCallback:
    # At most two database reads a second: a step on a GPU is ~0.1 s and must not wait on SQL each time.
    # A batch stops only when all its jobs are canceled; the others' images are kept (finish_rendered).
    last = [0.0]

    def on_step(step: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < CANCEL_POLL_SECONDS:
            return
        last[0] = now
        try:
            with ctx.sessions() as s:
                canceled = s.scalar(
                    select(func.count()).select_from(Job).where(Job.id.in_(job_ids), Job.cancel_requested.is_(True))
                )
        except OperationalError:
            return  # the database is restarting: keep rendering, the next poll asks again
        if canceled == len(job_ids):
            raise RenderCanceled(job_ids[0])

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
        **lora_parameters(req.extra.get("loras")),
        "precision": ctx.runtime.precision,
        **(req.inputs.described if req.inputs is not None else {}),
    }


def store_results(
    job_id: str, ctx: JobContext, req: RenderRequest, images: list, gpu_seconds: float, notes: list[str]
) -> None:
    fmt, quality = str(req.extra["format"]), int(req.extra["quality"])
    specs: list[dict[str, Any]] = req.extra.get("renditions") or []
    rows = []
    for index, (image, seed) in enumerate(zip(images, req.seeds, strict=True)):
        params = generation_parameters(req, seed, ctx)
        outputs = [("", image, fmt, quality, params)]
        for spec in specs:
            # Made here, on the CPU, from the same render: the GPU is already rendering the next job.
            made = make_rendition(image, spec, cutout=req.inputs.cutout if req.inputs is not None else None)
            described = {**params, "rendition": spec["name"], "rendition_fit": spec.get("fit", "cover")}
            if spec.get("background"):  # a main image: the cutout on white, not a resize of this render
                described.update(rendition_background=spec["background"], rendition_fill=spec["fill"])
            outputs.append((spec["name"], made, spec["format"], int(spec["quality"]), described))
        for name, picture, out_fmt, out_quality, meta in outputs:
            encoded = encode_image(picture, out_fmt, out_quality, meta)
            key = image_key(job_id, index, out_fmt, name)
            ctx.storage.put(key, encoded.data)
            rows.append(
                Image(
                    job_id=job_id,
                    index=index,
                    rendition=name,
                    seed=seed,
                    width=picture.width,
                    height=picture.height,
                    format=out_fmt,
                    sha256=encoded.sha256,
                    bytes=len(encoded.data),
                    storage_key=key,
                )
            )
    with transaction(ctx.sessions) as s:
        if not lifecycle.succeed(s, job_id, gpu_seconds, "; ".join(notes) or None):
            # It ended elsewhere meanwhile (failed past the hard limit, canceled): that ending stands, and
            # these images are not recorded (the files under its keys are overwritten by any rerun).
            log.warning("job %s rendered here but had already ended: images not recorded", job_id)
            _worker_done(s, ctx, job_id)
            return
        # A rerun replaces the rows of an earlier attempt: one set of images per job, never two.
        s.execute(delete(Image).where(Image.job_id == job_id))
        s.add_all(rows)
        _worker_done(s, ctx, job_id)
    _notify(job_id, ctx)


def finish_without_images(job_id: str, ctx: JobContext, status: JobStatus, error: str) -> Outcome:
    """A claimed job ends failed or canceled with the reason (SKIPPED if it had ended otherwise meanwhile)."""
    with transaction(ctx.sessions) as s:
        ended = lifecycle.end(s, job_id, status, error)
        _worker_done(s, ctx, job_id)
    _notify(job_id, ctx)
    return lifecycle.ENDED[status] if ended else Outcome.SKIPPED


def _notify(job_id: str, ctx: JobContext) -> None:
    # After the commit: the webhook sender reads the recorded ending, never one still in flight.
    if ctx.notify is not None:
        ctx.notify(job_id)


def _worker_done(s: Session, ctx: JobContext, job_id: str) -> None:
    ctx.in_flight.discard(job_id)
    s.execute(
        update(Worker).where(Worker.name == ctx.name).values(jobs_done=Worker.jobs_done + 1, last_heartbeat=utcnow())
    )
    # Finishing overlaps the next render: the worker is ready only if no later job made it busy meanwhile.
    s.execute(
        update(Worker)
        .where(Worker.name == ctx.name, Worker.current_job_id == job_id)
        .values(state="ready", current_job_id=None)
    )
