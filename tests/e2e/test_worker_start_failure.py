"""A worker whose model does not load says so and stops; it never looks ready and takes no jobs (issue 16, bug 1)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import DEFAULT_MODEL, FarmSettings
from migrations.runner import upgrade
from models import make_engine, make_session_factory
from tests.farm_helpers import REPO, start_worker, stop_process_group, wait_for, wait_ready, worker_env
from worker.start_failure import START_FAILED_EXIT

pytestmark = pytest.mark.e2e


def test_worker_without_weights_reports_failed_with_the_reason_and_exits_non_zero(tmp_path: Path) -> None:
    # given: a farm with a queued job, and a worker asked for the real model, which is not cached (the tests
    # run with HF_HUB_OFFLINE=1, so nothing can be downloaded either)
    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    upgrade(url)
    queue = f"{os.environ['ZFARM_QUEUE']}-{uuid.uuid4().hex[:6]}"
    settings = FarmSettings(data_dir=tmp_path, database_url=url, worker_offline_after_seconds=10)
    sessions = make_session_factory(make_engine(url))
    name = "nomodel@localhost"
    log = tmp_path / "worker.log"
    with TestClient(create_app(settings, reconcile_every=1.0, queue=queue)) as api:
        job_id = api.post("/v1/jobs", json={"prompt": "a mug", "width": 256, "height": 256}).json()["id"]
        # when
        proc = start_worker(url, tmp_path, name, log, ZFARM_MODEL=DEFAULT_MODEL, ZFARM_QUEUE=queue)
        try:
            code = proc.wait(timeout=120)
        finally:
            stop_process_group(proc)
        output = log.read_text()
        # then: one line says why (what is missing and what to do), at the end, and no traceback
        assert code == 3, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        last = output.strip().splitlines()[-1]
        assert last.startswith(f"zfarm worker {name} failed: model '{DEFAULT_MODEL}' is not in the local"), last
        assert f"hf download {DEFAULT_MODEL}" in last and "ZFARM_MODEL=tiny" in last
        workers = api.get("/v1/workers").json()["workers"]
        assert [(w["name"], w["state"]) for w in workers] == [(name, "failed")]
        assert workers[0]["error"] in last
        metrics = api.get("/metrics").text
        assert 'zfarm_workers{state="failed"} 1.0' in metrics
        assert 'zfarm_workers{state="loading"} 0.0' in metrics
        job = api.get(f"/v1/jobs/{job_id}").json()
        assert (job["status"], job["attempts"], job["error"]) == ("queued", 0, None)
        why = workers[0]["error"]
        assert job["waiting_for"] == f"a live worker: none is running; worker {name} failed to start: {why}"

        # and the job still runs once a worker that can render starts (its message was not consumed for nothing)
        good = start_worker(url, tmp_path, "tiny@localhost", tmp_path / "tiny.log", ZFARM_QUEUE=queue)
        try:
            wait_ready(sessions, "tiny@localhost", good, tmp_path / "tiny.log")
            wait_for(lambda: api.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded", 60, "the job to succeed")
        finally:
            stop_process_group(good)
        assert api.get(f"/v1/jobs/{job_id}").json()["waiting_for"] is None
        states = {w["name"]: w["state"] for w in api.get("/v1/workers").json()["workers"]}
        assert states[name] == "failed"


def test_a_worker_refused_before_it_forks_exits_with_the_start_failure_code(tmp_path: Path) -> None:
    # given: a worker asked for the FP8 tier on a machine without a card that has it
    env = worker_env(f"sqlite:///{tmp_path / 'zfarm.db'}", tmp_path, "fp8@localhost", ZFARM_PRECISION="fp8")
    # when
    refused = subprocess.run(
        [sys.executable, "-m", "zfarm.cli", "worker"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    # then: one line, and the code `zfarm up` reads as "cannot start, do not restart" (it restarted it before)
    assert refused.returncode == START_FAILED_EXIT, refused.stderr[-2000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: worker fp8@localhost refuses to start: "), last
    assert "Traceback" not in refused.stderr
