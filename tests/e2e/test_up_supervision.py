"""`zfarm up` stops warm and restarts what dies (issue 17, item 4): real processes, the tiny model."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
import redis

from tests.e2e.up_process import alive, job_row, kill_tree, process_tree, ready_workers, start_up, up_env
from tests.farm_helpers import wait_for
from zfarm.client import Client
from zfarm.launcher.redis_server import free_port

pytestmark = pytest.mark.e2e


def test_sigterm_to_zfarm_up_lets_the_running_job_finish_once_then_exits_0(tmp_path: Path) -> None:
    # given: a farm rendering a job that takes several seconds
    data, log = tmp_path / "data", tmp_path / "up.log"
    env = up_env(data, free_port(), free_port(), ZFARM_STOP_TIMEOUT_SECONDS="300")  # a busy test machine
    up = start_up(env, log)
    tree: list[psutil.Process] = []
    try:
        with Client(f"http://127.0.0.1:{env['ZFARM_API_PORT']}") as client:
            wait_for(lambda: up.poll() is not None or ready_workers(client), 240, "a ready worker", 0.5)
            assert up.poll() is None, log.read_text()[-3000:]
            tree = process_tree(up)
            job_id = client.submit("a long render", width=512, height=512, steps=10, seed=3)["id"]
            wait_for(lambda: client.get(job_id)["status"] == "running", 120, "the job running", 0.2)
            time.sleep(0.5)  # inside the denoising loop
        # when: SIGTERM to `zfarm up` (a deploy, `systemctl stop`)
        signalled = datetime.now(UTC)
        up.send_signal(signal.SIGTERM)
        code = up.wait(timeout=360)
    finally:
        kill_tree(up, tree)
    said = log.read_text()
    # then: the job finished after the signal, once, and the farm stopped cleanly
    assert code == 0, said[-3000:]
    row = job_row(data, job_id)
    assert row["status"] == "succeeded" and row["attempts"] == 1, (row, said[-3000:])
    assert row["finished_at"].replace(tzinfo=UTC) > signalled  # it was mid-render when the stop came
    assert "zfarm: warm stop: running jobs finish first" in said
    assert "WorkerLostError" not in said, said[-3000:]
    assert alive(tree) == []


def test_a_worker_or_redis_killed_under_zfarm_up_is_restarted_and_the_next_job_succeeds(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "up.log"
    env = up_env(data, free_port(), free_port())
    up = start_up(env, log)
    seen: list[psutil.Process] = []
    try:
        with Client(f"http://127.0.0.1:{env['ZFARM_API_PORT']}", timeout=30) as client:
            [name] = wait_for(lambda: up.poll() is not None or ready_workers(client), 240, "a ready worker", 0.5)
            assert up.poll() is None, log.read_text()[-3000:]
            seen = process_tree(up)
            wait_for(lambda: f"worker {name} ready on " in log.read_text(), 10, "the ready line")
            # when: the worker's main process is killed
            worker = _child(up, "--name")
            worker.kill()
            # then: it is restarted, the screen says so, and a job submitted afterwards succeeds
            said = f"zfarm: {name} was killed by SIGKILL; restarting it in 1 s (restart 1 of at most 5 in 10 min)"
            wait_for(lambda: said in log.read_text(), 30, "the restart line")
            wait_for(lambda: log.read_text().count(f"worker {name} ready on ") == 2, 240, "the worker ready again")
            seen += process_tree(up)
            job_id = client.submit("after a worker restart", width=256, height=256, seed=1)["id"]
            assert client.wait(job_id, timeout=120)["status"] == "succeeded"
            # when: the embedded Redis is killed
            server = _child(up, "redis-server")
            port = int(re.search(r"redis +redis://127\.0\.0\.1:(\d+)/0", log.read_text())[1])  # type: ignore[index]
            server.kill()
            # then: it comes back on its port with its append-only file, and the farm goes on
            wait_for(lambda: "zfarm: redis was killed by SIGKILL; restarting it in 1 s" in log.read_text(), 30, "redis")
            wait_for(lambda: _answers(port) and _children(up, "redis-server") != [server], 30, "redis back")
            seen += process_tree(up)
            job_id = client.submit("after a redis restart", width=256, height=256, seed=2)["id"]
            assert client.wait(job_id, timeout=180)["status"] == "succeeded"
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=120)
    finally:
        kill_tree(up, seen)
    assert code == 0, log.read_text()[-3000:]
    assert alive(seen) == []


def _child(up: subprocess.Popen[bytes], marker: str) -> psutil.Process:
    """The direct child of `zfarm up` whose command line holds `marker`."""
    [child] = _children(up, marker)
    return child


def _children(up: subprocess.Popen[bytes], marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.Process(up.pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if marker in " ".join(p.cmdline()):
                found.append(p)
    return found


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.ConnectionError:
        return False


@pytest.mark.timeout(900)  # two starts of the farm and a render on a shared test machine
def test_a_second_sigterm_stops_cold_and_the_cut_off_job_runs_again_at_the_next_start(tmp_path: Path) -> None:
    # given: a farm rendering a job that takes several seconds
    data, log = tmp_path / "data", tmp_path / "up.log"
    env = up_env(data, free_port(), free_port())
    url = f"http://127.0.0.1:{env['ZFARM_API_PORT']}"
    up = start_up(env, log)
    tree: list[psutil.Process] = []
    try:
        with Client(url) as client:
            wait_for(lambda: up.poll() is not None or ready_workers(client), 240, "a ready worker", 0.5)
            tree = process_tree(up)
            job_id = client.submit("cut off", width=512, height=512, steps=10, seed=4)["id"]
            wait_for(lambda: client.get(job_id)["status"] == "running", 120, "the job running", 0.2)
        # when: SIGTERM, then SIGTERM again once the warm stop has begun
        up.send_signal(signal.SIGTERM)
        wait_for(lambda: "zfarm: warm stop" in log.read_text(), 30, "the warm stop")
        up.send_signal(signal.SIGTERM)
        code = up.wait(timeout=60)
    finally:
        kill_tree(up, tree)
    said = log.read_text()
    # then: the screen says the stop is cold, the job did not finish, and nothing is left running
    assert code == 0, said[-3000:]
    assert said.count("zfarm: cold stop: running jobs are cut off and run again at the next start") == 1
    assert job_row(data, job_id)["status"] != "succeeded"
    assert alive(tree) == []
    # when: the farm starts again, the job runs again and succeeds
    up = start_up(env, tmp_path / "again.log")
    try:
        with Client(url) as client:
            wait_for(lambda: up.poll() is not None or ready_workers(client), 240, "a ready worker again", 0.5)
            final = client.wait(job_id, timeout=300)
        up.send_signal(signal.SIGINT)
        up.wait(timeout=120)
    finally:
        kill_tree(up, process_tree(up))
    assert final["status"] == "succeeded" and final["attempts"] == 2, final
