"""Driving `zfarm up` as a user does: a real process tree, the tiny model, signals to stop it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import select

from models import Job, make_engine
from tests.farm_helpers import REPO
from zfarm.client import Client


def up_env(data: Path, api_port: int, flower_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFARM_")}
    env.update(
        {
            "ZFARM_DATA_DIR": str(data),
            "ZFARM_API_PORT": str(api_port),
            "ZFARM_FLOWER_PORT": str(flower_port),
            "ZFARM_MODEL": "tiny",
            "ZFARM_WARMUP_SIZE": "256",
            "ZFARM_FLOWER_PASSWORD": "s3cret",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


def start_up(env: dict[str, str], log: Path, cwd: Path = REPO) -> subprocess.Popen[bytes]:
    """`python -m zfarm.cli up` started from `cwd`, its screen (stdout and stderr) in `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "zfarm.cli", "up"], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )


def ready_workers(client: Client) -> list[str]:
    try:
        return [w["name"] for w in client.workers() if w["state"] == "ready"]
    except httpx.TransportError:
        return []


def job_row(data: Path, job_id: str) -> dict[str, Any]:
    """The job's row, read from the farm's SQLite file (the farm may be stopped by then)."""
    engine = make_engine(f"sqlite:///{data / 'zfarm.db'}")
    try:
        with engine.connect() as conn:
            row = conn.execute(select(Job.status, Job.attempts, Job.finished_at).where(Job.id == job_id)).one()
        return dict(row._mapping)
    finally:
        engine.dispose()


def process_tree(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(proc.pid).children(recursive=True)
    return []


def kill_tree(proc: subprocess.Popen[bytes], seen: Sequence[psutil.Process] = ()) -> None:
    """Ends what a farm that did not stop on its own left running (its children have sessions of their own)."""
    for p in [*process_tree(proc), *seen]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def alive(processes: list[psutil.Process]) -> list[list[str]]:
    out = []
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.cmdline())
    return out
