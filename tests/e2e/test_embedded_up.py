"""`zfarm up` with nothing configured: embedded Redis, SQLite in the data dir, API, a CPU worker, Flower.

Driven the way a user drives it: the `zfarm` CLI for the client side, SIGINT to stop, and nothing left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.farm_helpers import REPO, wait_for
from zfarm.client import AsyncClient, Client
from zfarm.launcher.redis_server import free_port

pytestmark = pytest.mark.e2e


def _up_env(data: Path, api_port: int, flower_port: int) -> dict[str, str]:
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
        }
    )
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zfarm.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_zfarm_up_serves_jobs_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    # given: a farm started with no Redis or database configured
    api_port, flower_port = free_port(), free_port()
    env = _up_env(tmp_path / "data", api_port, flower_port)
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "zfarm.cli", "up"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{api_port}"
    env["ZFARM_URL"] = url
    try:
        with Client(url) as client:
            wait_for(lambda: _ready(client), 180, "a ready worker behind `zfarm up`", interval=0.5)
            tree = psutil.Process(up.pid).children(recursive=True)
            names = " ".join(" ".join(p.cmdline()) for p in tree)
            assert "redis-server" in names and "flower" in names and "worker" in names
            # when: a user submits with the CLI and waits
            submitted = _cli(
                env,
                "submit",
                "a wool scarf on a chair",
                "--width",
                "256",
                "--height",
                "256",
                "--seed",
                "99",
                "--wait",
                "-o",
                str(tmp_path / "out"),
            )
            assert submitted.returncode == 0, submitted.stderr + submitted.stdout
            job_id = submitted.stdout.splitlines()[0].strip()
            job = client.get(job_id)
            # then
            assert job["status"] == "succeeded"
            [image] = job["images"]
            served = client.image_bytes(job_id, 0)
            assert hashlib.sha256(served).hexdigest() == image["sha256"]
            assert (tmp_path / "out" / f"{job_id}_0.png").read_bytes() == served
            status = _cli(env, "status", job_id, "--json")
            assert status.returncode == 0 and '"succeeded"' in status.stdout
            fetched = _cli(env, "fetch", job_id, "-o", str(tmp_path / "fetched"))
            assert fetched.returncode == 0 and (tmp_path / "fetched" / f"{job_id}_0.png").read_bytes() == served
            # Flower is up, behind basic auth
            flower = f"http://127.0.0.1:{flower_port}/workers"
            wait_for(lambda: _answers(flower), 60, "flower")
            assert httpx.get(flower).status_code == 401
            assert httpx.get(flower, auth=("zfarm", "s3cret")).status_code == 200
            # the operator is told what each card chose once it is ready
            up_log = tmp_path / "up.log"
            wait_for(lambda: " ready on " in up_log.read_text(), 10, "the worker's ready line")
            said = up_log.read_text()
            assert "memory policy auto; each card's choice is printed when it is ready" in said
            ready_line = r"worker cpu0@\S+ ready on cpu[^:]*: memory policy full, load [\d.]+ s, warmup"
            assert re.search(ready_line, said), said
            # the sqlite database and the embedded Redis' append-only file live in the data dir
            assert (tmp_path / "data" / "zfarm.db").is_file()
            assert (tmp_path / "data" / "redis").is_dir()
        # the async client sees the same job
        import asyncio

        async def _async_get() -> dict:
            async with AsyncClient(url) as aclient:
                return await aclient.get(job_id)

        assert asyncio.run(_async_get())["images"] == job["images"]
        # when: Ctrl-C
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
        log.close()
    # then: everything it started is gone
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"left behind: {[p.cmdline() for p in alive]}"


def _ready(client: Client) -> bool:
    try:
        return any(w["state"] == "ready" for w in client.workers())
    except httpx.TransportError:
        return False


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
        return True
    except httpx.TransportError:
        return False


def test_zfarm_up_without_weights_says_how_to_get_them_and_stops(tmp_path: Path) -> None:
    # given: no ZFARM_MODEL (the real model, not cached here) and no way to download it (HF_HUB_OFFLINE=1)
    env = _up_env(tmp_path / "data", free_port(), free_port())
    del env["ZFARM_MODEL"]
    # when
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "zfarm.cli", "up"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        code = up.wait(timeout=180)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        _kill_tree(up)
    # then: it stops on its own, non-zero, with the worker's one line saying what to do, and leaves nothing
    said = log.read_text()
    assert code == 1, said[-3000:]
    line = re.search(r"zfarm: worker cpu0@\S+ failed: (.*); stopping the farm", said)
    assert line, said[-3000:]
    assert "not in the local Hugging Face cache" in line[1] and "hf download Tongyi-MAI/Z-Image-Turbo" in line[1]
    assert "ZFARM_MODEL=tiny" in line[1]
    # (what the other children print while Redis stops under them is issue 17's warm stop, not this test's)
    assert "Traceback" not in said[: said.index("; stopping the farm")], said[-3000:]
    assert "zfarm: stopped" in said


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Ends what a farm that did not stop on its own left running (its children have sessions of their own)."""
    if proc.poll() is not None:
        return
    tree = psutil.Process(proc.pid).children(recursive=True)
    for p in [psutil.Process(proc.pid), *tree]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    proc.wait()
