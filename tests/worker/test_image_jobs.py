"""The worker's side of image jobs, as plain functions on real SQLite and the tiny pipeline (no Celery): inputs read
from storage at the claim, image jobs never batched with others, a missing input file fails the job with why."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from api.assets import add_asset
from core.imaging.ingest import ingest
from core.imaging.placement import Placement, place_cutout
from core.storage import LocalStorage
from migrations.runner import upgrade
from models import Job, make_engine, make_session_factory
from models.db import transaction
from models.lifecycle import Outcome
from tests.image_helpers import cutout, encoded
from worker.finishing import Finisher
from worker.jobs import JobContext, run_job
from worker.process import register
from worker.runtime import Runtime

NAME = "test-photos0@here"
PLACEMENT = {"fit": 0.7, "anchor": "center", "offset_x": 0, "offset_y": 0}


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
    yield JobContext(NAME, runtime, sessions, storage, 3, 30.0, batch_max_images=4, finisher=Finisher(0))


def _asset_id(ctx: JobContext) -> str:
    with transaction(ctx.sessions) as s:
        asset, _ = add_asset(s, ctx.storage, None, ingest(encoded(cutout()), 10**7), 0, "c.png")
        return asset.id


def _job(ctx: JobContext, **extra: object) -> str:
    with transaction(ctx.sessions) as s:
        job = Job(prompt="a bottle on a shelf", width=256, height=256, steps=2, guidance_scale=0.0, seed=3, **extra)
        s.add(job)
    return job.id


def _place(ctx: JobContext, asset_id: str) -> str:
    params = {"strength": 1.0, "mask_grow": 0, "placement": PLACEMENT}
    return _job(ctx, mode="place", image_asset_id=asset_id, mode_parameters=params)


def _status(ctx: JobContext, job_id: str) -> tuple[str, str | None]:
    with ctx.sessions() as s:
        job = s.get(Job, job_id)
        return job.status, job.error


def test_an_image_job_is_never_a_text_jobs_companion_and_renders_with_its_input(ctx: JobContext) -> None:
    text_id = _job(ctx)
    place_id = _place(ctx, _asset_id(ctx))
    assert run_job(text_id, ctx) == Outcome.RENDERED
    assert _status(ctx, place_id)[0] == "queued"  # same size and steps, yet not rendered beside the text job
    assert run_job(place_id, ctx) == Outcome.RENDERED
    with ctx.sessions() as s:
        key = s.scalar(select(Job).where(Job.id == place_id)).images[0].storage_key
    with ctx.storage.open(key) as fh:
        out = np.asarray(PILImage.open(io.BytesIO(fh.read())).convert("RGB"))
    layer = np.asarray(place_cutout(cutout(), (256, 256), Placement(**PLACEMENT)).layer)  # type: ignore[arg-type]
    opaque = layer[..., 3] == 255
    assert np.array_equal(out[opaque], layer[..., :3][opaque])


def test_an_input_missing_from_storage_fails_the_job_with_the_reason(ctx: JobContext) -> None:
    asset_id = _asset_id(ctx)
    job_id = _place(ctx, asset_id)
    path = ctx.storage.path(f"assets/{asset_id[:2]}/{asset_id}.png")
    assert path is not None
    path.unlink()
    assert run_job(job_id, ctx) == Outcome.FAILED
    status, error = _status(ctx, job_id)
    assert status == "failed" and error is not None and f"asset {asset_id} could not be read from storage" in error
