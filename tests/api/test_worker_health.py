"""Worker health as people read it: failed workers keep their reason, and a job nobody can run says why."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.settings import FarmSettings
from models import Worker
from models.base import utcnow

WHY = "model 'Tongyi-MAI/Z-Image-Turbo' is not in the local Hugging Face cache; ZFARM_MODEL=tiny ..."


def _worker(name: str, state: str, beat_ago: float = 0.0, error: str | None = None) -> Worker:
    return Worker(
        name=name,
        hostname="h",
        pid=1,
        device="cpu",
        state=state,
        error=error,
        last_heartbeat=utcnow() - timedelta(seconds=beat_ago),
    )


def _api(sessions: sessionmaker[Session], tmp_path: Path) -> TestClient:
    url = str(sessions.kw["bind"].url.render_as_string(hide_password=False))
    return TestClient(create_app(FarmSettings(data_dir=tmp_path, database_url=url, worker_offline_after_seconds=30)))


def test_failed_worker_shows_failed_with_its_reason_even_after_its_heartbeat_stops(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions() as s:
        s.add_all([_worker("gpu0@a", "failed", beat_ago=600, error=WHY), _worker("gpu1@a", "ready", beat_ago=600)])
        s.commit()
    with _api(sessions, tmp_path) as api:
        workers = {w["name"]: w for w in api.get("/v1/workers").json()["workers"]}
        metrics = api.get("/metrics").text
    assert (workers["gpu0@a"]["state"], workers["gpu0@a"]["error"]) == ("failed", WHY)
    assert (workers["gpu1@a"]["state"], workers["gpu1@a"]["error"]) == ("offline", None)
    assert 'zfarm_workers{state="failed"} 1.0' in metrics and 'zfarm_workers{state="offline"} 1.0' in metrics


def test_a_queued_job_says_what_it_waits_for_when_no_worker_can_take_it(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with _api(sessions, tmp_path) as api:
        # given: no worker at all
        job = api.post("/v1/jobs", json={"prompt": "a mug", "width": 256, "height": 256}).json()
        assert job["status"] == "queued"
        assert job["waiting_for"].startswith("a live worker: none is running (start one with `zfarm worker`")
        # a worker that failed to start: the record names it and why
        with sessions() as s:
            s.add(_worker("gpu0@a", "failed", error=WHY))
            s.commit()
        waiting = api.get(f"/v1/jobs/{job['id']}").json()["waiting_for"]
        assert waiting == f"a live worker: none is running; worker gpu0@a failed to start: {WHY}"
        assert api.get("/v1/jobs").json()["jobs"][0]["waiting_for"] == waiting
        # a live worker: nothing to wait for; an offline one does not count
        with sessions() as s:
            s.add_all([_worker("gpu1@a", "ready"), _worker("gpu2@a", "ready", beat_ago=600)])
            s.commit()
        assert api.get(f"/v1/jobs/{job['id']}").json()["waiting_for"] is None
        # a job that is not queued waits for nothing
        canceled = api.delete(f"/v1/jobs/{job['id']}").json()
        assert canceled["status"] == "canceled" and canceled["waiting_for"] is None
