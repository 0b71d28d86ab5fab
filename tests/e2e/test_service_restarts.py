"""Redis and PostgreSQL restart in the middle of a batch: every job still completes, none stays running."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from models import Image, Job
from tests.farm_helpers import LiveFarm, live_farm, wait_for
from zfarm.launcher.redis_server import free_port, start_embedded_redis

pytestmark = pytest.mark.e2e
JOBS = 8
JOB = {"width": 512, "height": 512, "steps": 12}


def _counts(farm: LiveFarm) -> dict[str, int]:
    try:
        with farm.sessions() as s:
            return dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    except Exception:  # the database is the thing restarting
        return {}


def _all_done_exactly_once(farm: LiveFarm, ids: list[str]) -> None:
    wait_for(lambda: _counts(farm).get("succeeded", 0) == len(ids), 240, "every job to succeed", interval=0.5)
    with farm.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.status == "running")) == 0
        per_job = dict(s.execute(select(Image.job_id, func.count()).group_by(Image.job_id)).all())
    assert per_job == {job_id: 1 for job_id in ids}


@pytest.mark.parametrize("persistent", [True, False], ids=["aof", "no-persistence"])
def test_redis_restart_mid_batch_loses_nothing(tmp_path: Path, persistent: bool) -> None:
    port = free_port()
    proc, url = start_embedded_redis(tmp_path / "redis", port, persistent=persistent)
    try:
        with live_farm(f"sqlite:///{tmp_path / 'zfarm.db'}", tmp_path, redis_url=url) as farm:
            ids = [farm.submit(prompt=f"item {i}", seed=i, **JOB) for i in range(JOBS)]
            wait_for(lambda: _counts(farm).get("succeeded", 0) >= 2, 120, "the batch under way")
            # when: Redis goes away and comes back on the same port (with or without its data)
            proc.terminate()
            proc.wait(timeout=20)
            time.sleep(2)
            proc, _ = start_embedded_redis(tmp_path / "redis", port, persistent=persistent)
            # then
            _all_done_exactly_once(farm, ids)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def private_postgres() -> Iterator[tuple[str, list[str]]]:
    """A PostgreSQL server of the test's own, so restarting it disturbs nobody else."""
    bindir = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
    if bindir is None or os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root, runuser and PostgreSQL server binaries to run a private PostgreSQL")
    root = Path(tempfile.mkdtemp(prefix="zfarm-pg-"))
    root.chmod(0o777)
    data, port = root / "data", free_port()

    def pg(*args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    ctl = [
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(root / "log"),
        "-w",
        "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
    ]
    pg(*ctl, "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", ctl
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60
        )
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_restart_mid_batch_loses_nothing(tmp_path: Path, private_postgres: tuple[str, list[str]]) -> None:
    url, ctl = private_postgres
    with live_farm(url, tmp_path) as farm:
        ids = [farm.submit(prompt=f"item {i}", seed=i, **JOB) for i in range(JOBS)]
        wait_for(lambda: _counts(farm).get("succeeded", 0) >= 2, 120, "the batch under way")
        # when: the database restarts (fast shutdown: every open connection is cut)
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *ctl, "-m", "fast", "restart"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        # then
        _all_done_exactly_once(farm, ids)
