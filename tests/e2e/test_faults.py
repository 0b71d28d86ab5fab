"""Every accepted job ends in exactly one result, whatever dies on the way.

Real worker processes, real Redis, real databases; faults are real signals to real processes, or are
injected at the pipeline boundary (ZFARM_FAULT_INJECTION=1) where a GPU would be needed to cause them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from broker_config.task_names import RENDER_JOB
from models import Image
from tests.farm_helpers import (
    LiveFarm,
    job_status,
    live_farm,
    start_worker,
    stop_process_group,
    wait_for,
    worker_pid,
)

pytestmark = pytest.mark.e2e
SLOW = {"width": 1024, "height": 1024, "steps": 12}  # a few seconds on the tiny model: time to interfere


def _image_rows(farm: LiveFarm, job_id: str) -> int:
    with farm.sessions() as s:
        return s.scalar(select(func.count()).select_from(Image).where(Image.job_id == job_id)) or 0


def _stored_files(farm: LiveFarm, job_id: str) -> list[Path]:
    return sorted((farm.settings.storage_dir / "jobs" / job_id[:2] / job_id).glob("*.*"))


def _wait_running(farm: LiveFarm, job_id: str) -> None:
    wait_for(lambda: job_status(farm.sessions, job_id) == "running", 60, f"job {job_id} running")
    time.sleep(0.5)  # inside the denoising loop, not at its start


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFarm]:
    data = tmp_path_factory.mktemp("faults")
    with live_farm(f"sqlite:///{data / 'zfarm.db'}", data, ZFARM_FAULT_INJECTION="1", ZFARM_MAX_ATTEMPTS="2") as farm:
        yield farm


@pytest.fixture(scope="module")
def short_limit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFarm]:
    # Its own worker: a 15 s limit must not cut the other fault tests' jobs on a busy machine.
    data = tmp_path_factory.mktemp("time-limit")
    with live_farm(
        f"sqlite:///{data / 'zfarm.db'}", data, ZFARM_FAULT_INJECTION="1", ZFARM_JOB_TIME_LIMIT_SECONDS="15"
    ) as farm:
        yield farm


def test_kill_9_of_the_worker_child_mid_job_reruns_it_once(faulty: LiveFarm) -> None:
    # given
    job_id = faulty.submit(prompt="a ceramic vase", num_images=2, width=512, height=512, steps=50)
    _wait_running(faulty, job_id)
    # when
    os.kill(worker_pid(faulty.sessions, faulty.worker_name), signal.SIGKILL)
    job = faulty.wait_job(job_id, timeout=120)
    # then: the parent requeued it, a new child ran it; one record, one set of images
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert len(job["images"]) == 2 and _image_rows(faulty, job_id) == 2
    assert [p.name for p in _stored_files(faulty, job_id)] == ["0.png", "1.png"]


def test_poison_job_goes_dead_after_the_attempt_cap_and_others_keep_draining(faulty: LiveFarm) -> None:
    poison = faulty.submit(prompt="[[fault:kill]] a cursed teapot")
    healthy = faulty.submit(prompt="a plain teapot")
    dead = faulty.wait_job(poison, timeout=180)
    fine = faulty.wait_job(healthy, timeout=180)
    assert dead["status"] == "dead", dead
    assert dead["attempts"] == 2 and "gave up after 2 attempts" in dead["error"]
    assert dead["images"] == []
    assert fine["status"] == "succeeded"


def test_out_of_memory_is_retried_once_under_a_stricter_policy(faulty: LiveFarm) -> None:
    recovered = faulty.wait_job(faulty.submit(prompt="[[fault:oom-once]] a desk"))
    assert recovered["status"] == "succeeded"
    assert "out of memory under full: retried with VAE tiling" in recovered["recovery"]
    failed = faulty.wait_job(faulty.submit(prompt="[[fault:oom]] a desk"))
    assert failed["status"] == "failed" and "out of memory again after one retry" in failed["error"]
    assert faulty.wait_job(faulty.submit(prompt="a desk after"))["status"] == "succeeded"  # worker healthy


def test_nan_output_is_retried_once_then_reported(faulty: LiveFarm) -> None:
    recovered = faulty.wait_job(faulty.submit(prompt="[[fault:nan-once]] a rug"))
    assert recovered["status"] == "succeeded" and "float32 VAE" in recovered["recovery"]
    failed = faulty.wait_job(faulty.submit(prompt="[[fault:nan]] a rug"))
    assert failed["status"] == "failed" and "NaN" in failed["error"] and "again after one retry" in failed["error"]
    assert failed["images"] == []


def test_nan_output_with_guidance_is_retried_at_lower_guidance_after_the_float32_vae(faulty: LiveFarm) -> None:
    # issue 16, item 5: a NaN/black render with guidance > 0 gets one more try at half the guidance
    recovered = faulty.wait_job(faulty.submit(prompt="[[fault:nan-twice]] a lamp", guidance_scale=3.0))
    assert recovered["status"] == "succeeded", recovered
    assert "float32 VAE" in recovered["recovery"]
    assert "retried at guidance 1.5 (asked 3)" in recovered["recovery"]
    # without guidance there is nothing to lower: the float32 retry is the last one
    failed = faulty.wait_job(faulty.submit(prompt="[[fault:nan-twice]] a lamp"))
    assert failed["status"] == "failed" and "again after one retry" in failed["error"]
    # and when the lower guidance does not cure it either, the error says what was tried
    failed = faulty.wait_job(faulty.submit(prompt="[[fault:nan]] a lamp", guidance_scale=3.0))
    assert failed["status"] == "failed" and "again after 2 retries" in failed["error"]
    assert "float32 VAE" in failed["error"] and "guidance 1.5" in failed["error"]


def test_job_past_its_soft_time_limit_fails_with_the_reason_and_the_worker_goes_on(short_limit: LiveFarm) -> None:
    stuck = short_limit.wait_job(short_limit.submit(prompt="[[fault:hang]] a clock"), timeout=60)
    assert stuck["status"] == "failed" and "exceeded the time limit of 15 s" in stuck["error"]
    assert short_limit.wait_job(short_limit.submit(prompt="a clock after"))["status"] == "succeeded"


def test_job_stuck_past_the_hard_time_limit_is_killed_and_failed(short_limit: LiveFarm) -> None:
    stuck = short_limit.wait_job(short_limit.submit(prompt="[[fault:hang-hard]] a frozen clock"), timeout=90)
    assert stuck["status"] == "failed" and "hard time limit of 15" in stuck["error"]
    after = short_limit.wait_job(short_limit.submit(prompt="a clock after the kill"), timeout=90)
    assert after["status"] == "succeeded"


def test_cancel_of_a_running_job_stops_it_and_stores_nothing(faulty: LiveFarm) -> None:
    job_id = faulty.submit(prompt="a long render", **{**SLOW, "steps": 40})
    _wait_running(faulty, job_id)
    response = faulty.api.delete(f"/v1/jobs/{job_id}")
    job = faulty.wait_job(job_id)
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    assert job["status"] == "canceled" and job["error"] == "canceled while running"
    assert job["images"] == [] and _stored_files(faulty, job_id) == []


def test_sigterm_to_the_worker_mid_job_finishes_it_before_exiting(tmp_path: Path) -> None:
    with live_farm(f"sqlite:///{tmp_path / 'zfarm.db'}", tmp_path) as farm:
        job_id = farm.submit(prompt="a deploy happens", **SLOW)
        _wait_running(farm, job_id)
        # when: the worker's main process gets SIGTERM, as `docker stop` sends it
        farm.worker.send_signal(signal.SIGTERM)
        code = farm.worker.wait(timeout=120)
        # then: warm shutdown finished the job first; exactly one result
        assert code == 0
        job = farm.api.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded" and job["attempts"] == 1 and _image_rows(farm, job_id) == 1


def test_the_same_message_delivered_twice_at_once_gives_one_output(tmp_path: Path) -> None:
    with live_farm(f"sqlite:///{tmp_path / 'zfarm.db'}", tmp_path, workers=2) as farm:
        # given: a committed job and two idle workers
        job_id = farm.submit(prompt="twice", **SLOW)
        # when: a second copy of its message is sent at once (two workers take one each)
        farm.api.app.state.celery.send_task(RENDER_JOB, args=[job_id], queue=farm.api.app.state.enqueuer.queue)
        job = farm.wait_job(job_id, timeout=120)
        time.sleep(3)  # let the second delivery finish its (skipping) run
        # then
        assert job["status"] == "succeeded" and job["attempts"] == 1
        assert _image_rows(farm, job_id) == 1 and len(_stored_files(farm, job_id)) == 1
        logs = "".join((tmp_path / f"{n}.log").read_text() for n in ("test-cpu0", "test-cpu0-2"))
        assert logs.count(f"job {job_id} not run: skipped") == 1


def test_kill_9_of_the_whole_worker_mid_job_requeues_it_when_the_worker_restarts(tmp_path: Path) -> None:
    with live_farm(f"sqlite:///{tmp_path / 'zfarm.db'}", tmp_path) as farm:
        job_id = farm.submit(prompt="a host dies", **SLOW)
        _wait_running(farm, job_id)
        # when: parent and child die at once (the message stays unacknowledged in Redis), then it comes back
        os.killpg(farm.worker.pid, signal.SIGKILL)
        farm.worker.wait()
        env_queue = farm.api.app.state.enqueuer.queue
        restarted = start_worker(
            farm.settings.resolved_database_url,
            tmp_path,
            farm.worker_name,
            tmp_path / "restarted.log",
            ZFARM_QUEUE=env_queue,
        )
        try:
            job = farm.wait_job(job_id, timeout=180)
        finally:
            stop_process_group(restarted)
        # then
        assert job["status"] == "succeeded" and job["attempts"] == 2
        assert _image_rows(farm, job_id) == 1 and len(_stored_files(farm, job_id)) == 1
