"""Starting real farm processes for tests: a `zfarm worker` process and an in-process API."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from migrations.runner import upgrade
from models import Job, Worker, make_engine, make_session_factory
from zfarm.settings import FarmSettings

REPO = Path(__file__).resolve().parents[1]


def worker_env(database_url: str, data_dir: Path, name: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ZFARM_DATABASE_URL": database_url,
            "ZFARM_DATA_DIR": str(data_dir),
            "ZFARM_MODEL": "tiny",
            "ZFARM_DEVICE": "cpu",
            "ZFARM_WARMUP_SIZE": "256",
            "ZFARM_HEARTBEAT_SECONDS": "1",
            "ZFARM_WORKER_NAME": name,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def start_worker(database_url: str, data_dir: Path, name: str, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "zfarm.cli", "worker", "--name", name],
            env=worker_env(database_url, data_dir, name, **extra),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def worker_state(sessions: sessionmaker[Session], name: str) -> str | None:
    with sessions() as s:
        return s.scalar(select(Worker.state).where(Worker.name == name))


def job_status(sessions: sessionmaker[Session], job_id: str) -> str | None:
    with sessions() as s:
        return s.scalar(select(Job.status).where(Job.id == job_id))


@dataclass
class LiveFarm:
    api: TestClient
    sessions: sessionmaker[Session]
    settings: FarmSettings
    worker: subprocess.Popen[bytes]
    worker_name: str
    log: Path

    def wait_job(self, job_id: str, timeout: float = 60) -> dict:
        final = {"succeeded", "failed", "canceled", "dead"}
        wait_for(lambda: job_status(self.sessions, job_id) in final, timeout, f"job {job_id} to finish")
        return self.api.get(f"/v1/jobs/{job_id}").json()


@contextlib.contextmanager
def live_farm(database_url: str, data_dir: Path, name: str = "test-cpu0@localhost") -> Iterator[LiveFarm]:
    upgrade(database_url)
    settings = FarmSettings(data_dir=data_dir, database_url=database_url, worker_offline_after_seconds=10)
    sessions = make_session_factory(make_engine(database_url))
    log = data_dir / f"{name.split('@')[0]}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = start_worker(database_url, data_dir, name, log)
    try:
        wait_for(lambda: worker_state(sessions, name) == "ready" or proc.poll() is not None, 120, "worker ready")
        assert proc.poll() is None, f"worker exited during start-up:\n{log.read_text()[-3000:]}"
        with TestClient(create_app(settings, reconcile_every=1.0)) as api:
            yield LiveFarm(api, sessions, settings, proc, name, log)
    finally:
        stop_process_group(proc)
