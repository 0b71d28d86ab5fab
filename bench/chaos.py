"""Chaos benchmark: N tiny-model jobs on several workers while workers and Redis are killed and restarted.

Everything is real: `zfarm api` (uvicorn), `zfarm worker` processes (Celery prefork), an embedded Redis
with its append-only file, SQLite or PostgreSQL. The images come from the tiny random test model (noise);
what is measured is delivery: accepted, succeeded, lost, duplicated, and how long recovery takes.

usage: python bench/chaos.py [--jobs 500] [--workers 3] [--seconds-between-faults 3] [--record]
       python bench/chaos.py --multi-host --database-url postgresql+psycopg://... [--jobs 500] [--batch-rows 50]
         (two API replicas, workers on their own data directories, faults in turn: the leader API replica, a
         worker, Redis; bench/chaos_multihost.py)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from migrations.runner import upgrade  # noqa: E402
from models import Image, Job, Worker, make_engine, make_session_factory  # noqa: E402
from zfarm.launcher.redis_server import free_port, start_embedded_redis  # noqa: E402


@dataclass
class Fault:
    at: float
    kind: str
    target: str
    running: list[str] = field(default_factory=list)


class Chaos:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args, self.root = args, root
        self.db_url = args.database_url or f"sqlite:///{root / 'zfarm.db'}"
        self.redis_port = free_port()
        self.redis, self.redis_url = start_embedded_redis(root / "redis", self.redis_port)
        upgrade(self.db_url)
        self.sessions = make_session_factory(make_engine(self.db_url))
        self.api_port = free_port()
        self.env = {
            **os.environ,
            "ZFARM_DATABASE_URL": self.db_url,
            "ZFARM_REDIS_URL": self.redis_url,
            "ZFARM_DATA_DIR": str(root),
            "ZFARM_MODEL": "tiny",
            "ZFARM_DEVICE": "cpu",
            "ZFARM_WARMUP_SIZE": "256",
            "ZFARM_AUTH": "false",
            "ZFARM_API_PORT": str(self.api_port),
            "ZFARM_HEARTBEAT_SECONDS": "1",
            "ZFARM_WORKER_OFFLINE_AFTER_SECONDS": "6",
            "ZFARM_RECONCILE_EVERY_SECONDS": "2",
            "ZFARM_RECONCILE_LOST_AFTER_SECONDS": "10",
            "ZFARM_MAX_ATTEMPTS": "10",
            "ZFARM_QUEUE": f"chaos-{os.getpid()}",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.api = self._spawn("api", ["api"])
        self.workers = {f"chaos{i}@{socket.gethostname()}": None for i in range(args.workers)}
        for name in self.workers:
            self.workers[name] = self._spawn(name, ["worker", "--name", name])
        self.faults: list[Fault] = []

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name.split('@')[0]}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "zfarm.cli", *args],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with self.sessions() as s:
                ready = s.scalar(select(func.count()).select_from(Worker).where(Worker.state == "ready"))
            if ready == len(self.workers):
                return
            time.sleep(0.5)
        raise RuntimeError("workers did not become ready")

    def submit(self, n: int) -> list[str]:
        url = f"http://127.0.0.1:{self.api_port}"
        ids = []
        with httpx.Client(base_url=url, timeout=30) as client:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    client.get("/healthz")
                    break
                time.sleep(0.2)
            for i in range(n):
                body = {"prompt": f"chaos item {i}", "width": 256, "height": 256, "steps": 4, "seed": i}
                response = client.post("/v1/jobs", json=body)
                response.raise_for_status()
                ids.append(response.json()["id"])
        return ids

    def running_jobs(self) -> list[str]:
        with self.sessions() as s:
            return list(s.scalars(select(Job.id).where(Job.status == "running")))

    def inject(self, rng: random.Random) -> None:
        kind = rng.choice(["kill-child", "kill-child", "kill-worker", "restart-redis"])
        running = self.running_jobs()
        name = rng.choice(list(self.workers))
        if kind == "kill-child":
            with self.sessions() as s:
                pid = s.scalar(select(Worker.pid).where(Worker.name == name))
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        elif kind == "kill-worker":
            proc = self.workers[name]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            time.sleep(1)
            self.workers[name] = self._spawn(name, ["worker", "--name", name])
        else:
            name = "redis"
            self.redis.kill()  # SIGKILL: the append-only file may miss its last second, as in a real crash
            self.redis.wait()
            time.sleep(1)
            self.redis, _ = start_embedded_redis(self.root / "redis", self.redis_port)
        self.faults.append(Fault(time.monotonic(), kind, name, running))

    def counts(self) -> dict[str, int]:
        with self.sessions() as s:
            return dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())

    def stop(self) -> None:
        for proc in [self.api, *self.workers.values()]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [self.api, *self.workers.values()]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.redis.terminate()
        self.redis.wait()


def recovery_seconds(chaos: Chaos, finished: dict[str, float]) -> list[float]:
    """Per fault: from the fault until every job it interrupted had succeeded."""
    out = []
    for fault in chaos.faults:
        ends = [finished[j] for j in fault.running if j in finished]
        if ends:
            out.append(max(0.0, max(ends) - fault.at))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--seconds-between-faults", type=float, default=3.0)
    ap.add_argument("--timeout", type=float, default=1500.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--record", action="store_true", help="append the result table to BENCHMARKS.md")
    ap.add_argument("--multi-host", action="store_true", help="two API replicas, as several hosts would run them")
    ap.add_argument("--batch-rows", type=int, default=50, help="multi-host: catalog rows per batch (one webhook each)")
    args = ap.parse_args()
    if args.multi_host:
        from bench.chaos_multihost import run_multi_host

        return run_multi_host(args)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="zfarm-chaos-"))
    chaos = Chaos(args, root)
    try:
        chaos.wait_ready()
        started = time.monotonic()
        ids = chaos.submit(args.jobs)
        print(f"accepted {len(ids)} jobs; injecting faults every ~{args.seconds_between_faults}s", flush=True)
        finished: dict[str, float] = {}
        deadline = started + args.timeout
        next_fault = time.monotonic() + args.seconds_between_faults
        while time.monotonic() < deadline:
            with chaos.sessions() as s:
                done = list(s.scalars(select(Job.id).where(Job.status.in_(["succeeded", "failed", "dead"]))))
            now = time.monotonic()
            for job_id in done:
                finished.setdefault(job_id, now)
            if len(done) >= len(ids):
                break
            # Faults only while most of the work is still ahead, so the end shows that everything recovers.
            if now >= next_fault and len(done) < 0.9 * len(ids):
                chaos.inject(rng)
                next_fault = now + rng.uniform(0.5, 1.5) * args.seconds_between_faults
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        counts = chaos.counts()
        with chaos.sessions() as s:
            per_job = dict(s.execute(select(Image.job_id, func.count()).group_by(Image.job_id)).all())
            expected = dict(s.execute(select(Job.id, Job.num_images)).all())
        stored = {p.parent.name: 0 for p in (root / "images").rglob("*.png")}
        for p in (root / "images").rglob("*.png"):
            stored[p.parent.name] += 1
        duplicated = sum(1 for j, n in per_job.items() if n > expected[j]) + sum(
            1 for j, n in stored.items() if n > expected.get(j, 0)
        )
        lost = len(ids) - sum(counts.get(k, 0) for k in ("succeeded", "failed", "dead", "canceled"))
        rec = recovery_seconds(chaos, finished)
        result = {
            "date": dt.date.today().isoformat(),
            "machine": f"{platform.node()} ({os.cpu_count()} cores)",
            "jobs": args.jobs,
            "workers": args.workers,
            "faults": len(chaos.faults),
            "fault_kinds": {
                k: sum(1 for f in chaos.faults if f.kind == k) for k in ("kill-child", "kill-worker", "restart-redis")
            },
            "accepted": len(ids),
            "succeeded": counts.get("succeeded", 0),
            "failed": counts.get("failed", 0),
            "dead": counts.get("dead", 0),
            "lost": lost,
            "duplicated": duplicated,
            "recovery_p50_s": round(statistics.median(rec), 2) if rec else None,
            "recovery_p99_s": round(sorted(rec)[min(len(rec) - 1, math.ceil(0.99 * len(rec)) - 1)], 2) if rec else None,
            "elapsed_s": round(elapsed, 1),
            "data": str(root),
        }
        print(json.dumps(result, indent=1))
        print("\n| accepted | succeeded | failed | dead | lost | duplicated | faults | recovery p50 / p99 s | wall s |")
        print("|---|---|---|---|---|---|---|---|---|")
        row = (
            f"| {result['accepted']} | {result['succeeded']} | {result['failed']} | {result['dead']} | {lost} | "
            f"{duplicated} | {len(chaos.faults)} {result['fault_kinds']} | {result['recovery_p50_s']} / "
            f"{result['recovery_p99_s']} | {result['elapsed_s']} |"
        )
        print(row)
        if args.record:
            with (REPO / "BENCHMARKS.md").open("a", encoding="utf-8") as fh:
                fh.write(
                    f"\n### Chaos run {result['date']} on {result['machine']}\n\n"
                    f"Command: `python bench/chaos.py --jobs {args.jobs} --workers {args.workers} "
                    f"--seconds-between-faults {args.seconds_between_faults} --record`\n\n"
                    "| accepted | succeeded | failed | dead | lost | duplicated | faults | "
                    "recovery p50 / p99 s | wall s |\n|---|---|---|---|---|---|---|---|---|\n" + row + "\n"
                )
        return 0 if lost == 0 and duplicated == 0 else 1
    finally:
        chaos.stop()


if __name__ == "__main__":
    sys.exit(main())
