"""Real `zfarm api` replicas for the multi-host tests: separate processes on free ports, one database and Redis."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.farm_helpers import REPO, stop_process_group, wait_for
from zfarm.launcher.redis_server import free_port

LEADER = re.compile(r"^zfarm_control_leader (\S+)$", re.MULTILINE)


@dataclass
class Replica:
    name: str
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "zfarm.cli", "api"],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self.answers, 90, f"API replica {self.name} to answer", interval=0.2)

    def answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} exited:\n{self.tail()}"
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        return False

    def leads(self) -> bool | None:
        """This replica's zfarm_control_leader gauge; None when it does not answer (killed)."""
        try:
            text = httpx.get(f"{self.url}/metrics", timeout=2).text
        except httpx.TransportError:
            return None
        match = LEADER.search(text)
        assert match, f"no zfarm_control_leader in /metrics of {self.name}"
        return float(match.group(1)) == 1.0

    def kill(self) -> None:
        """SIGKILL, as a host that dies: no lease released, no thread stopped."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process_group(self.proc)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def replica_env(
    database_url: str, redis_url: str, queue: str, data_dir: Path, port: int, **extra: str
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ZFARM_DATABASE_URL": database_url,
            "ZFARM_REDIS_URL": redis_url,
            "ZFARM_QUEUE": queue,
            "ZFARM_DATA_DIR": str(data_dir),
            "ZFARM_API_PORT": str(port),
            "ZFARM_AUTH": "false",
            "ZFARM_LEADER_LEASE_SECONDS": "2",
            "ZFARM_RECONCILE_EVERY_SECONDS": "0.5",
            "ZFARM_WORKER_OFFLINE_AFTER_SECONDS": "6",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def make_replicas(
    database_url: str, redis_url: str, queue: str, root: Path, count: int = 2, **extra: str
) -> list[Replica]:
    replicas = []
    for i in range(count):
        name = "ab"[i] if count <= 2 else str(i)
        data = root / f"api-{name}"
        data.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = replica_env(database_url, redis_url, queue, data, port, **extra)
        replicas.append(Replica(name, port, env, root / f"api-{name}.log"))
    return replicas


class LeaderWatch:
    """Samples every replica's gauge (also every `every` seconds in the background between start and stop);
    remembers whether two ever led at once."""

    def __init__(self, replicas: list[Replica], every: float = 0.2) -> None:
        self.replicas, self.every = replicas, every
        self.overlaps: list[list[str]] = []
        self.samples = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-watch", daemon=True)

    def start(self) -> LeaderWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> list[str]:
        leaders = [r.name for r in self.replicas if r.proc is not None and r.proc.poll() is None and r.leads()]
        with self._lock:
            self.samples += 1
            if len(leaders) > 1:
                self.overlaps.append(leaders)
        return leaders

    def wait_single_leader(self, timeout: float) -> str:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            leaders = self.sample()
            if len(leaders) == 1:
                return leaders[0]
            time.sleep(0.1)
        raise AssertionError(f"no single leader within {timeout}s (last sample: {leaders})")
