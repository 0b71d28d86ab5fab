"""A job over HTTP, through real Redis, to a real `zfarm worker` process running the tiny pipeline."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select

from broker_config.celery_app import app as celery_app
from broker_config.task_names import RENDER_JOB
from models import Image as ImageRow
from tests.farm_helpers import LiveFarm, live_farm

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def farm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFarm]:
    data = tmp_path_factory.mktemp(f"farm-{request.param}")
    url = f"sqlite:///{data / 'zfarm.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    with live_farm(url, data) as live:
        yield live


def test_job_succeeds_with_png_whose_sha256_matches_served_bytes(farm: LiveFarm) -> None:
    # given
    body = {"prompt": "a ceramic mug on marble", "width": 256, "height": 256, "seed": 42, "num_images": 2}
    # when
    created = farm.api.post("/v1/jobs", json=body)
    job = farm.wait_job(created.json()["id"])
    # then
    assert created.status_code == 202, created.text
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1
    assert job["worker_name"] == farm.worker_name
    assert job["device_name"].startswith("cpu")
    assert job["memory_policy"] == "full"
    assert job["model_id"] == "tiny" and job["test_model_noise"] is True
    assert set(job["versions"]) >= {"diffusers", "torch"}
    assert job["gpu_seconds"] > 0 and job["started_at"] and job["finished_at"]
    assert [im["seed"] for im in job["images"]] == [42, 43] == job["seeds"]
    for image in job["images"]:
        served = farm.api.get(f"/v1/jobs/{job['id']}/images/{image['index']}")
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/png"
        assert hashlib.sha256(served.content).hexdigest() == image["sha256"]
        assert len(served.content) == image["bytes"]
        png = Image.open(io.BytesIO(served.content))
        assert png.size == (256, 256)
        params = json.loads(png.text["parameters"])
        assert params["seed"] == image["seed"] and params["prompt"] == body["prompt"]


def test_same_seed_and_parameters_give_the_same_bytes(farm: LiveFarm) -> None:
    # dedup off: the second job must render again, not reuse the first one's images
    body = {"prompt": "a linen shirt on a hanger", "width": 256, "height": 256, "seed": 7, "dedup": False}
    first = farm.wait_job(farm.api.post("/v1/jobs", json=body).json()["id"])
    second = farm.wait_job(farm.api.post("/v1/jobs", json=body).json()["id"])
    other_seed = farm.wait_job(farm.api.post("/v1/jobs", json={**body, "seed": 8}).json()["id"])
    assert first["id"] != second["id"]
    assert first["images"][0]["sha256"] == second["images"][0]["sha256"]
    assert other_seed["images"][0]["sha256"] != first["images"][0]["sha256"]


def test_webp_and_jpeg_outputs_are_served_with_their_media_type(farm: LiveFarm) -> None:
    for fmt, media in (("webp", "image/webp"), ("jpeg", "image/jpeg")):
        job = farm.wait_job(
            farm.api.post(
                "/v1/jobs",
                json={
                    "prompt": "a leather wallet",
                    "width": 256,
                    "height": 256,
                    "output_format": fmt,
                    "quality": 80,
                },
            ).json()["id"]
        )
        served = farm.api.get(job["images"][0]["url"])
        assert job["status"] == "succeeded"
        assert served.headers["content-type"] == media
        assert Image.open(io.BytesIO(served.content)).format == fmt.upper()


def test_renditions_are_made_from_the_rendered_image_on_the_worker(farm: LiveFarm, tmp_path: Path) -> None:
    from api.app import create_app
    from tests.farm_helpers import serve_http
    from worker.renditions import make_rendition
    from zfarm.client import Client

    # given: a 320x256 PNG master, a cropped WebP thumbnail and a padded PNG (lossless, so comparable exactly)
    renditions = [
        {"name": "thumb", "width": 128, "height": 128, "format": "webp", "quality": 80},
        {"name": "pad", "width": 160, "height": 160, "format": "png", "fit": "contain"},
    ]
    body = {"prompt": "a canvas tote bag", "width": 320, "height": 256, "seed": 5, "renditions": renditions}
    # when
    job = farm.wait_job(farm.api.post("/v1/jobs", json=body).json()["id"])
    # then
    assert job["status"] == "succeeded", job
    [image] = job["images"]
    master = Image.open(io.BytesIO(farm.api.get(image["url"]).content))
    made = {r["name"]: r for r in image["renditions"]}
    assert list(made) == ["pad", "thumb"]
    for name, fmt, size in (("thumb", "WEBP", (128, 128)), ("pad", "PNG", (160, 160))):
        served = farm.api.get(made[name]["url"])
        assert hashlib.sha256(served.content).hexdigest() == made[name]["sha256"]
        picture = Image.open(io.BytesIO(served.content))
        assert (picture.format, picture.size) == (fmt, size)
        assert (made[name]["width"], made[name]["height"]) == size
    padded = Image.open(io.BytesIO(farm.api.get(made["pad"]["url"]).content))
    expected = make_rendition(master, renditions[1])
    assert padded.convert("RGB").tobytes() == expected.tobytes()  # the same pixels, from the same render
    assert padded.getpixel((80, 2))[:3] == (255, 255, 255)  # letterboxed with white above a 320x256 image
    assert json.loads(padded.text["parameters"])["rendition"] == "pad"
    # the Python client, over real HTTP, downloads the master and both renditions
    state = farm.api.app.state
    app = create_app(farm.settings, celery=state.celery, queue=state.enqueuer.queue)
    with serve_http(app) as url, Client(url) as client:
        paths = client.download(job["id"], tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        [f"{job['id']}_0.png", f"{job['id']}_0_pad.png", f"{job['id']}_0_thumb.webp"]
    )


def test_a_twin_queued_while_its_original_waited_reuses_its_images_when_claimed(farm: LiveFarm) -> None:
    # given: a job, another job, then the first one's twin and a forced twin, all queued before any finished
    body = {"prompt": "a glass carafe on linen", "width": 256, "height": 256, "steps": 2, "seed": 11}
    posted = [
        farm.api.post("/v1/jobs", json=b).json()
        for b in (body, {**body, "prompt": "a cork board"}, body, {**body, "dedup": False})
    ]
    assert all(p["reused_from"] is None for p in posted)  # nothing had finished: the API reused nothing
    # when
    original, _, twin, forced = (farm.wait_job(p["id"]) for p in posted)
    # then: the twin found its original succeeded when the worker claimed it, and shares its images
    assert original["status"] == twin["status"] == forced["status"] == "succeeded"
    assert original["reused_from"] is None and original["gpu_seconds"] > 0
    assert twin["reused_from"] == original["id"] and twin["gpu_seconds"] == 0.0
    assert twin["images"][0]["sha256"] == original["images"][0]["sha256"]
    assert farm.api.get(twin["images"][0]["url"]).content == farm.api.get(original["images"][0]["url"]).content
    # dedup: false renders again (the same bytes: same seed and parameters)
    assert forced["reused_from"] is None and forced["gpu_seconds"] > 0
    assert forced["images"][0]["sha256"] == original["images"][0]["sha256"]


def test_a_duplicate_message_for_a_finished_job_changes_nothing(farm: LiveFarm) -> None:
    job = farm.wait_job(
        farm.api.post("/v1/jobs", json={"prompt": "a steel kettle", "width": 256, "height": 256}).json()["id"]
    )
    # when: the same id is delivered again (at-least-once delivery)
    celery_app.send_task(RENDER_JOB, args=[job["id"]], queue=farm.api.app.state.enqueuer.queue)
    marker = farm.wait_job(
        farm.api.post("/v1/jobs", json={"prompt": "after", "width": 256, "height": 256}).json()["id"]
    )
    # then: the later job finished, so the duplicate was consumed; the first job is untouched
    again = farm.api.get(f"/v1/jobs/{job['id']}").json()
    assert marker["status"] == "succeeded"
    assert again["attempts"] == 1 and again["images"] == job["images"]
    with farm.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ImageRow).where(ImageRow.job_id == job["id"])) == 1


def test_workers_endpoint_lists_the_live_worker(farm: LiveFarm) -> None:
    workers = farm.api.get("/v1/workers").json()["workers"]
    mine = [w for w in workers if w["name"] == farm.worker_name]
    assert len(mine) == 1
    assert mine[0]["state"] in ("ready", "busy")
    assert mine[0]["memory_policy"] == "full" and mine[0]["gpu_name"].startswith("cpu")
    assert mine[0]["load_seconds"] is not None and mine[0]["warmup_seconds"] is not None


def test_canceling_a_queued_job_means_it_never_runs(farm: LiveFarm, tmp_path: Path) -> None:
    # given: the worker is busy with a slower job, so the next one waits in the queue
    slow = farm.api.post("/v1/jobs", json={"prompt": "slow", "width": 1024, "height": 1024, "steps": 12}).json()
    queued = farm.api.post("/v1/jobs", json={"prompt": "never", "width": 256, "height": 256}).json()
    # when
    canceled = farm.api.delete(f"/v1/jobs/{queued['id']}")
    farm.wait_job(slow["id"], timeout=120)
    # then
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    final = farm.api.get(f"/v1/jobs/{queued['id']}").json()
    assert final["status"] == "canceled" and final["attempts"] == 0 and final["images"] == []
    assert farm.api.delete(f"/v1/jobs/{queued['id']}").status_code == 409


def test_healthz_reports_database_and_broker(farm: LiveFarm) -> None:
    health = farm.api.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok", "broker": "ok", "storage": "ok"}
