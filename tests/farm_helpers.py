"""Starting real farm processes for tests: a `zfarm worker` process and an in-process API."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from broker_config.celery_app import make_celery
from core.settings import FarmSettings
from migrations.runner import upgrade
from models import Job, Worker, make_engine, make_session_factory

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
    try:
        with sessions() as s:
            return s.scalar(select(Job.status).where(Job.id == job_id))
    except OperationalError:  # the database is restarting (a fault test): ask again next round
        return None


def worker_pid(sessions: sessionmaker[Session], name: str) -> int | None:
    with sessions() as s:
        return s.scalar(select(Worker.pid).where(Worker.name == name))


@dataclass
class LiveFarm:
    api: TestClient
    sessions: sessionmaker[Session]
    settings: FarmSettings
    worker: subprocess.Popen[bytes]
    worker_name: str
    log: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def submit(self, **body: object) -> str:
        response = self.api.post("/v1/jobs", json={"width": 256, "height": 256, **body})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def wait_job(self, job_id: str, timeout: float = 60) -> dict:
        final = {"succeeded", "failed", "canceled", "dead"}
        wait_for(lambda: job_status(self.sessions, job_id) in final, timeout, f"job {job_id} to finish")
        return self.api.get(f"/v1/jobs/{job_id}").json()


def wait_ready(sessions: sessionmaker[Session], name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    wait_for(lambda: worker_state(sessions, name) == "ready" or proc.poll() is not None, 240, f"{name} ready")
    assert proc.poll() is None, f"worker exited during start-up:\n{log.read_text()[-3000:]}"


@contextlib.contextmanager
def live_farm(
    database_url: str,
    data_dir: Path,
    name: str = "test-cpu0@localhost",
    redis_url: str | None = None,
    workers: int = 1,
    settings_overrides: dict[str, object] | None = None,
    worker_dir: Path | None = None,
    **worker_extra: str,
) -> Iterator[LiveFarm]:
    """An in-process API and `workers` real worker processes (named name, name-2, ...) on one database.

    `worker_dir`: the workers' data directory, apart from the API's (as on another host); default: the same."""
    upgrade(database_url)
    settings = FarmSettings(
        **{
            "data_dir": data_dir,
            "database_url": database_url,
            "worker_offline_after_seconds": 10,
            "reconcile_lost_after_seconds": 3,
            **(settings_overrides or {}),
        }
    )
    sessions = make_session_factory(make_engine(database_url))
    data_dir.mkdir(parents=True, exist_ok=True)
    if redis_url is not None:
        worker_extra["ZFARM_REDIS_URL"] = redis_url
    names = [name] + [name.replace("@", f"-{i}@") for i in range(2, workers + 1)]
    # A queue of its own: farms alive at once in one test run must not take each other's messages.
    queue = f"{os.environ['ZFARM_QUEUE']}-{uuid.uuid4().hex[:6]}"
    worker_extra["ZFARM_QUEUE"] = queue
    procs = []
    worker_dir = worker_dir or data_dir
    worker_dir.mkdir(parents=True, exist_ok=True)
    try:
        for n in names:
            log = data_dir / f"{n.split('@')[0]}.log"
            procs.append(start_worker(database_url, worker_dir, n, log, **worker_extra))
        for n, proc in zip(names, procs, strict=True):
            wait_ready(sessions, n, proc, data_dir / f"{n.split('@')[0]}.log")
        celery = make_celery(redis_url) if redis_url else None
        with TestClient(create_app(settings, celery=celery, reconcile_every=1.0, queue=queue)) as api:
            yield LiveFarm(api, sessions, settings, procs[0], name, data_dir / f"{name.split('@')[0]}.log", procs)
    finally:
        for proc in procs:
            stop_process_group(proc)


@contextlib.contextmanager
def serve_http(app: object) -> Iterator[str]:
    """Serves an app with a real uvicorn on a free loopback port (for the CLI, which speaks HTTP)."""
    import threading

    import uvicorn

    from zfarm.launcher.redis_server import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
