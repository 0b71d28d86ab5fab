"""Compatible queued jobs rendered in one call: real SQLite, the real tiny pipeline, plain functions (no Celery).

The farm path end to end (Celery, HTTP) runs in tests/bench/test_gpu_throughput_smoke.py.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from sqlalchemy import select, update

from core.storage import LocalStorage
from migrations.runner import upgrade
from models import Job, Worker, make_engine, make_session_factory
from models.db import transaction
from models.lifecycle import Outcome
from worker.batching import batch_limit
from worker.finishing import Finisher
from worker.jobs import JobContext, claim_job, run_job
from worker.process import register
from worker.render import RenderRequest
from worker.runtime import Runtime

NAME = "test-gpu0@here"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    rt = Runtime("tiny", None, "auto", "cpu", tmp_path_factory.mktemp("models"), 1536 * 1536)
    rt.load()
    return rt


@pytest.fixture
def ctx(tmp_path: Path, runtime: Runtime) -> Iterator[JobContext]:
    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    register(sessions, NAME, runtime)
    storage = LocalStorage(tmp_path / "images")
    yield JobContext(NAME, runtime, sessions, storage, 3, 30.0, batch_max_images=4, finisher=Finisher(2))


def _job(ctx: JobContext, prompt: str, seed: int, width: int = 256, num_images: int = 1, **extra: object) -> str:
    with transaction(ctx.sessions) as s:
        job = Job(prompt=prompt, width=width, height=256, steps=3, guidance_scale=0.0, seed=seed, num_images=num_images)
        for key, value in extra.items():
            setattr(job, key, value)
        s.add(job)
    return job.id


def _status(ctx: JobContext, job_id: str) -> str:
    with ctx.sessions() as s:
        return s.scalar(select(Job.status).where(Job.id == job_id))


def _stored(ctx: JobContext, job_id: str, index: int = 0) -> np.ndarray:
    with ctx.sessions() as s:
        job = s.get(Job, job_id)
        key = job.images[index].storage_key
    with ctx.storage.open(key) as fh:
        return np.asarray(PILImage.open(io.BytesIO(fh.read())).convert("RGB"), dtype=np.int16)


def _alone(runtime: Runtime, prompt: str, seed: int) -> np.ndarray:
    with torch.inference_mode():
        out = runtime.pipe(
            prompt=[prompt],
            height=256,
            width=256,
            num_inference_steps=3,
            guidance_scale=0.0,
            generator=[torch.Generator("cpu").manual_seed(seed)],
        )
    return np.asarray(out.images[0], dtype=np.int16)


def test_compatible_queued_jobs_render_together_and_equal_each_seed_alone(ctx: JobContext, runtime: Runtime) -> None:
    # given: a leader, two compatible jobs (one of two images), one of another size, one canceled while queued
    leader = _job(ctx, "a red mug", 11)
    small = _job(ctx, "a much longer prompt about a blue ceramic chair in a studio", 12)
    pair = _job(ctx, "a lamp", 13, num_images=2)
    wide = _job(ctx, "a lamp", 14, width=512)
    canceled = _job(ctx, "a lamp", 15, cancel_requested=True)
    # when: the leader's message is handled, and finishing threads drain
    assert run_job(leader, ctx) == Outcome.RENDERED
    ctx.finisher.drain()
    # then: the batch held 4 images; the other size and the canceled job were left to their own messages
    assert [_status(ctx, j) for j in (leader, small, pair)] == ["succeeded"] * 3
    assert _status(ctx, wide) == "queued" and _status(ctx, canceled) == "queued"
    # and every stored image is its seed rendered alone by the plain pipeline (one 8-bit level, float32 CPU)
    for job_id, prompt, seed, index in [
        (leader, "a red mug", 11, 0),
        (small, "a much longer prompt about a blue ceramic chair in a studio", 12, 0),
        (pair, "a lamp", 14, 1),
    ]:
        assert np.abs(_stored(ctx, job_id, index) - _alone(runtime, prompt, seed)).max() <= 1
    # and a companion's own message later finds it finished: skipped, not rendered again
    assert run_job(small, ctx) == Outcome.SKIPPED
    with ctx.sessions() as s:
        worker = s.get(Worker, NAME)
        assert worker.jobs_done == 3 and worker.state == "ready" and worker.current_job_id is None
        assert s.get(Job, small).attempts == 1


def test_a_companion_still_being_stored_is_not_claimed_again(ctx: JobContext) -> None:
    # given: a job this process rendered, whose finishing thread has not recorded it yet
    job_id = _job(ctx, "a vase", 3)
    assert isinstance(claim_job(job_id, ctx), RenderRequest)
    assert job_id in ctx.in_flight
    # when: its own message arrives meanwhile
    # then: skipped (a restarted worker of the same name, with nothing in flight, would take it over instead)
    assert claim_job(job_id, ctx) == Outcome.SKIPPED
    ctx.in_flight.clear()
    assert isinstance(claim_job(job_id, ctx), RenderRequest)


def test_a_canceled_companion_is_not_stored_while_the_others_are(ctx: JobContext) -> None:
    leader, other = _job(ctx, "a mug", 1), _job(ctx, "a cup", 2)
    ctx.finisher = Finisher(0)
    original = ctx.runtime.render_many

    def cancel_other_then_render(reqs: list[RenderRequest], on_step: object = None, try_index: int = 0) -> list[list]:
        with transaction(ctx.sessions) as s:  # a user cancels `other` while the batch renders
            s.execute(update(Job).where(Job.id == other).values(cancel_requested=True))
        return original(reqs, on_step, try_index)

    ctx.runtime.render_many = cancel_other_then_render  # type: ignore[method-assign]
    try:
        assert run_job(leader, ctx) == Outcome.RENDERED
    finally:
        del ctx.runtime.render_many
    assert _status(ctx, leader) == "succeeded" and _status(ctx, other) == "canceled"


def test_a_job_retried_after_a_crash_runs_alone(ctx: JobContext) -> None:
    # given: a job whose first attempt died with its worker (it may be what killed it), and fresh jobs
    retried, fresh_a, fresh_b = _job(ctx, "a mug", 1, attempts=1), _job(ctx, "a cup", 2), _job(ctx, "a jar", 3)
    ctx.finisher = Finisher(0)
    # when / then: as leader it takes no companions, and a fresh leader does not take it along
    assert run_job(retried, ctx) == Outcome.RENDERED
    assert _status(ctx, fresh_a) == "queued" and _status(ctx, fresh_b) == "queued"
    with transaction(ctx.sessions) as s:
        s.execute(update(Job).where(Job.id == retried).values(status="queued", attempts=1))
    assert run_job(fresh_a, ctx) == Outcome.RENDERED
    assert _status(ctx, fresh_b) == "succeeded" and _status(ctx, retried) == "queued"


@pytest.mark.parametrize(("size", "expected"), [(512, 16), (1024, 4), (2048, 1), (256, 16)])
def test_batch_size_follows_a_pixel_budget(size: int, expected: int) -> None:
    assert batch_limit(RenderRequest("p", size, size, 8, 0.0, [1]), 16, 4 * 1024 * 1024) == expected


def test_finisher_waits_for_submitted_work_and_applies_back_pressure() -> None:
    done: list[int] = []
    finisher = Finisher(2, max_pending=2)
    for i in range(5):  # the third submit waits for a free slot instead of queueing without bound
        finisher.submit(lambda i=i: (time.sleep(0.05), done.append(i)))
    finisher.wait_idle()
    assert sorted(done) == [0, 1, 2, 3, 4]
    finisher.drain()
    finisher.submit(lambda: done.append(5))  # after shutdown: finished inline, never dropped
    assert done[-1] == 5


def test_companions_come_from_the_leaders_lane_and_campaign(ctx: JobContext) -> None:
    # given: an interactive job, and a bulk row of a campaign, both compatible
    interactive, other = _job(ctx, "a mug", 1), _job(ctx, "a cup", 2)
    bulk = _job(ctx, "a jar", 3, lane="bulk")
    ctx.finisher = Finisher(0)
    # when
    assert run_job(interactive, ctx) == Outcome.RENDERED
    # then: the interactive one took its own lane's job along, not the bulk row (which waits for its turn)
    assert _status(ctx, other) == "succeeded" and _status(ctx, bulk) == "queued"


def test_a_bf16_worker_neither_takes_nor_batches_an_fp8_job(ctx: JobContext) -> None:
    # given: a bf16 worker, an fp8 job delivered to it by mistake, and an fp8 job compatible with a bf16 one
    misrouted = _job(ctx, "a mug", 1, precision="fp8")
    leader, fp8_mate = _job(ctx, "a cup", 2), _job(ctx, "a jar", 3, precision="fp8")
    ctx.finisher = Finisher(0)
    # when / then: the misrouted job is left queued for its own tier (the reconciler sends it there)
    assert claim_job(misrouted, ctx) == Outcome.SKIPPED and _status(ctx, misrouted) == "queued"
    # and the bf16 job renders without the fp8 one beside it
    assert run_job(leader, ctx) == Outcome.RENDERED
    assert _status(ctx, leader) == "succeeded" and _status(ctx, fp8_mate) == "queued"
