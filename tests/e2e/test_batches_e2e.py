"""Batches against a real `zfarm worker` process: lanes, turns between batches, retry-failed, dedup, archive."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select, update

from control.broker_inspect import _job_id
from models import Job, JobStatus, Lane
from tests.farm_helpers import LiveFarm, job_status, live_farm, wait_for

pytestmark = pytest.mark.e2e
SMALL = {"width": 256, "height": 256, "steps": 2}


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFarm]:
    data = tmp_path_factory.mktemp("batch-farm")
    # One bulk id in Redis at a time and fast rounds: the turn order is then exact and checkable.
    # model="tiny" as the worker runs it: dedup only reuses images made by the model the API is set to.
    url = f"sqlite:///{data / 'zfarm.db'}"
    overrides = {"model": "tiny", "bulk_queue_depth": 1, "dispatch_every_seconds": 0.1}
    with live_farm(url, data, settings_overrides=overrides) as live:
        yield live


def _batch(farm: LiveFarm, keys: list[str], product: str, **extra: object) -> dict:
    rows = [{"sku": k, "product": f"{product} {k}"} for k in keys]
    body = {"template": "studio photo of a {product}", "rows": rows, "defaults": SMALL, **extra}
    created = farm.api.post("/v1/batches", json=body)
    assert created.status_code == 202, created.text
    return created.json()


def _wait_batch(farm: LiveFarm, batch_id: str, timeout: float = 120) -> dict:
    wait_for(lambda: farm.api.get(f"/v1/batches/{batch_id}").json()["status"] != "active", timeout, f"batch {batch_id}")
    return farm.api.get(f"/v1/batches/{batch_id}").json()


def _ids_in(r: redis.Redis, key: str) -> set[str]:
    return {i for i in map(_job_id, r.lrange(key, 0, -1)) if i}


def test_interactive_jobs_run_before_queued_bulk_jobs_and_batches_take_turns(farm: LiveFarm, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    bulk = farm.api.app.state.enqueuer.queues[Lane.BULK]  # the farm's own queue (one per test farm)
    # given: the worker busy with a slow job, and two batches waiting (A first, then B)
    blocker = farm.api.post("/v1/jobs", json={"prompt": "slow blocker", "width": 1024, "height": 1024, "steps": 20})
    blocker_id = blocker.json()["id"]
    wait_for(lambda: job_status(farm.sessions, blocker_id) == "running", 30, "the blocker to start")
    a = _batch(farm, ["A1", "A2", "A3", "A4"], "mug")
    b = _batch(farm, ["B1", "B2"], "lamp")
    with farm.sessions() as s:
        key_of = dict(
            s.execute(select(Job.id, Job.item_key).where(Job.batch_id.in_([a["id"], b["id"]]))).tuples().all()
        )
    a1 = next(i for i, k in key_of.items() if k == "A1")
    wait_for(lambda: a1 in _ids_in(r, bulk), 10, "A1 to wait in the bulk queue")
    # when: two interactive jobs arrive after the bulk job is already in Redis
    interactive = [
        farm.api.post("/v1/jobs", json={"prompt": f"single {n}", **SMALL, "dedup": False}).json()["id"] for n in (1, 2)
    ]
    assert job_status(farm.sessions, blocker_id) == "running", "the blocker ended too soon: the order proves nothing"
    assert a1 in _ids_in(r, bulk)
    _wait_batch(farm, a["id"])
    _wait_batch(farm, b["id"])
    # then: both interactive jobs ran right after the blocker, and the batches took turns
    with farm.sessions() as s:
        started = s.execute(
            select(Job.id, Job.item_key).where(Job.id.in_([blocker_id, *interactive, *key_of])).order_by(Job.started_at)
        ).all()
    order = [
        key or ("blocker" if job_id == blocker_id else f"I{interactive.index(job_id) + 1}") for job_id, key in started
    ]
    assert order == ["blocker", "I1", "I2", "A1", "B1", "A2", "B2", "A3", "A4"]


def test_retry_failed_requeues_only_failed_and_dead_jobs(farm: LiveFarm) -> None:
    # given: a finished batch in which one job failed and one died (as the worker records them)
    batch = _batch(farm, ["R1", "R2", "R3"], "kettle")
    assert _wait_batch(farm, batch["id"])["status"] == "succeeded"
    with farm.sessions() as s:
        jobs = {j.item_key: j for j in s.scalars(select(Job).where(Job.batch_id == batch["id"]))}
        s.execute(update(Job).where(Job.id == jobs["R1"].id).values(status=JobStatus.FAILED, error="RenderError: x"))
        s.execute(update(Job).where(Job.id == jobs["R2"].id).values(status=JobStatus.DEAD, attempts=3))
        s.commit()
    untouched = farm.api.get(f"/v1/jobs/{jobs['R3'].id}").json()
    assert farm.api.get(f"/v1/batches/{batch['id']}").json()["status"] == "failed"
    # when
    retried = farm.api.post(f"/v1/batches/{batch['id']}/retry-failed")
    done = _wait_batch(farm, batch["id"])
    # then
    assert retried.status_code == 200 and retried.json()["requeued"] == 2
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 3
    for key in ("R1", "R2"):
        job = farm.api.get(f"/v1/jobs/{jobs[key].id}").json()
        assert job["status"] == "succeeded" and job["attempts"] == 1 and job["error"] is None
    assert farm.api.get(f"/v1/jobs/{jobs['R3'].id}").json() == untouched
    assert farm.api.post(f"/v1/batches/{batch['id']}/retry-failed").json()["requeued"] == 0


def test_resubmitted_catalog_reuses_finished_images_unless_dedup_is_off(farm: LiveFarm) -> None:
    first = _batch(farm, ["D1", "D2"], "vase")
    assert _wait_batch(farm, first["id"])["status"] == "succeeded"
    # when: the same catalog again, and once more with dedup off
    again = _batch(farm, ["D1", "D2", "D3"], "vase")
    forced = _batch(farm, ["D1"], "vase", dedup=False)
    # then: D1 and D2 are done at once, sharing the first batch's images; D3 and the forced row render
    assert again["jobs_reused"] == 2 and again["jobs_queued"] == 1
    assert forced["jobs_reused"] == 0
    _wait_batch(farm, again["id"])
    _wait_batch(farm, forced["id"])
    with farm.sessions() as s:
        rows = {
            (j.batch_id, j.item_key): j
            for j in s.scalars(select(Job).where(Job.batch_id.in_([first["id"], again["id"], forced["id"]])))
        }
        for key in ("D1", "D2"):
            old, new = rows[(first["id"], key)], rows[(again["id"], key)]
            assert new.reused_from == old.id and new.gpu_seconds == 0.0 and new.attempts == 0
            assert [i.storage_key for i in new.images] == [i.storage_key for i in old.images]
            assert [i.sha256 for i in new.images] == [i.sha256 for i in old.images]
        assert rows[(again["id"], "D3")].reused_from is None and rows[(again["id"], "D3")].attempts == 1
        forced_job, old_d1 = rows[(forced["id"], "D1")], rows[(first["id"], "D1")]
        assert forced_job.reused_from is None and forced_job.attempts == 1
        # a forced render of the same parameters and seed gives the same bytes under its own key
        assert forced_job.images[0].sha256 == old_d1.images[0].sha256
        assert forced_job.images[0].storage_key != old_d1.images[0].storage_key


def test_archive_holds_every_image_by_key_and_the_manifest(farm: LiveFarm) -> None:
    batch = _batch(farm, ["Z1", "Z2"], "chair", defaults={**SMALL, "num_images": 2})
    assert _wait_batch(farm, batch["id"])["images_done"] == 4
    archive = farm.api.get(f"/v1/batches/{batch['id']}/archive.zip")
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
        assert sorted(zf.namelist()) == ["Z1_0.png", "Z1_1.png", "Z2_0.png", "Z2_1.png", "manifest.csv"]
        manifest = zf.read("manifest.csv").decode()
        assert manifest == farm.api.get(f"/v1/batches/{batch['id']}/manifest.csv").text
        import csv

        lines = list(csv.DictReader(io.StringIO(manifest)))
        assert len(lines) == 4
        for line in lines:
            assert line["status"] == "succeeded" and line["test_model_noise"] == "True"
            assert hashlib.sha256(zf.read(line["file"])).hexdigest() == line["sha256"]


def test_cli_batch_waits_with_progress_and_fetch_downloads_images_and_manifest(farm: LiveFarm, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from api.app import create_app
    from tests.farm_helpers import serve_http
    from zfarm.cli import main

    catalog = tmp_path / "catalog.csv"
    catalog.write_text("sku,product\nC1,teapot\nC2,bowl\n", encoding="utf-8")
    state = farm.api.app.state
    with serve_http(create_app(farm.settings, celery=state.celery, queue=state.enqueuer.queue)) as url:
        ran = CliRunner().invoke(
            main,
            [
                "batch",
                str(catalog),
                "--template",
                "photo of a {product}",
                "--set",
                "width=256",
                "--set",
                "height=256",
                "--set",
                "steps=2",
                "--rendition",
                "thumb=64x64:webp:80",
                "--wait",
                "--url",
                url,
            ],
        )
        assert ran.exit_code == 0, ran.output
        batch_id = ran.output.split()[0]
        assert "2 succeeded" in ran.output
        fetched = CliRunner().invoke(main, ["fetch", batch_id, "-o", str(tmp_path / "out"), "--url", url])
    assert fetched.exit_code == 0, fetched.output
    out = tmp_path / "out"
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["C1.png", "C2.png", "manifest.csv", "thumb/C1.webp", "thumb/C2.webp"]
    from PIL import Image

    with Image.open(out / "thumb" / "C1.webp") as thumb:
        assert (thumb.format, thumb.size) == ("WEBP", (64, 64))
