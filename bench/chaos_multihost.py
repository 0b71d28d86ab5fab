"""Multi-host chaos (`bench/chaos.py --multi-host`): the farm as several hosts would run it, on one machine.

Two `zfarm api` replicas, `--workers` `zfarm worker` processes, a `zfarm webhooks` sender, each on its own empty
data directory (no shared disk), one PostgreSQL (`--database-url`, required: SQLite is one host's file), one
embedded Redis with its append-only file, and moto's S3-compatible server (`moto_server`, a process of its own)
holding the bucket. A catalog of `--jobs` rows (batches of `--batch-rows`, each with a webhook) goes in through
both replicas; then, in turn, the leader API replica, a worker and the S3 server are SIGKILLed and restarted. At
the end: lost 0, duplicated 0 (no job with more image rows or bucket objects than asked), every webhook delivered
once, and the control loops ran on one replica at a time (each replica's zfarm_control_leader gauge, sampled
every second: each scrape reads the whole farm from SQL, so faster sampling loads a small machine).

moto keeps objects in memory: a restart of it empties the bucket (the bench makes the bucket again at once), so
the objects of jobs finished before an S3 fault are gone afterwards. That is moto's, not a real store's, and is
reported apart (`objects_gone_with_s3_restarts`); it is not counted as lost (the jobs' rows and images are there).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from sqlalchemy import func, select

from bench.chaos import REPO, Fault, recovery_seconds
from control.leader import lease_key
from migrations.runner import upgrade
from models import Image, Job, Worker, make_engine, make_session_factory
from zfarm.launcher.redis_server import free_port, start_embedded_redis

LEADER = re.compile(r"^zfarm_control_leader (\S+)$", re.MULTILINE)
BECAME = re.compile(r"^(\S+ \S+) INFO control\.leader: control loops: (\S+) became leader", re.MULTILINE)
SECRET = "chaos-multihost-secret-0123456789"
KINDS = ("kill-api", "kill-worker", "kill-s3")
S3_ENV = {"AWS_ACCESS_KEY_ID": "chaos", "AWS_SECRET_ACCESS_KEY": "chaos", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "zfarm-chaos"


@dataclass
class Webhooks:
    """A receiver on loopback that counts every POST by path."""

    paths: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def start(self) -> ThreadingHTTPServer:
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hooks.lock:
                    hooks.paths[self.path] += 1
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


class MultiHostChaos:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        if not (args.database_url or "").startswith("postgresql"):
            raise SystemExit("--multi-host needs --database-url postgresql+psycopg://...: hosts share one database")
        self.args, self.root = args, root
        self.db_url = args.database_url
        self.redis_port = free_port()
        self.redis, self.redis_url = start_embedded_redis(root / "redis", self.redis_port)
        upgrade(self.db_url)
        self.sessions = make_session_factory(make_engine(self.db_url))
        self.webhooks = Webhooks()
        self.receiver = self.webhooks.start()
        self.s3_port = free_port()
        self.s3 = self._start_s3()
        queue = f"chaos-mh-{os.getpid()}"
        self.env = {
            **os.environ,
            **S3_ENV,
            "ZFARM_STORAGE_URL": f"s3://{BUCKET}/farm",
            "ZFARM_S3_ENDPOINT_URL": self.s3_url,
            "ZFARM_DATABASE_URL": self.db_url,
            "ZFARM_REDIS_URL": self.redis_url,
            "ZFARM_MODEL": "tiny",
            "ZFARM_DEVICE": "cpu",
            "ZFARM_WARMUP_SIZE": "256",
            "ZFARM_AUTH": "false",
            "ZFARM_HEARTBEAT_SECONDS": "1",
            "ZFARM_WORKER_OFFLINE_AFTER_SECONDS": "6",
            "ZFARM_RECONCILE_EVERY_SECONDS": "2",
            "ZFARM_RECONCILE_LOST_AFTER_SECONDS": "10",
            "ZFARM_LEADER_LEASE_SECONDS": "3",
            "ZFARM_MAX_ATTEMPTS": "10",
            "ZFARM_QUEUE": queue,
            "ZFARM_WEBHOOK_QUEUE": f"{queue}-webhooks",
            "ZFARM_WEBHOOK_SECRET": SECRET,
            "ZFARM_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
            "ZFARM_WEBHOOK_BACKOFF_SECONDS": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.api_ports = {"api-a": free_port(), "api-b": free_port()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for name in self.api_ports:
            self._start_api(name)
        (root / "webhooks").mkdir()
        self.procs["webhooks"] = self._spawn(
            "webhooks", ["webhooks", "--concurrency", "4"], ZFARM_DATA_DIR=str(root / "webhooks")
        )
        self.workers = [f"host{i}-gpu0@host{i}" for i in range(args.workers)]
        for name in self.workers:
            self._start_worker(name)
        self.faults: list[Fault] = []
        self.api_kills: list[float] = []  # wall-clock times of each SIGKILL of the leader replica
        self.samples: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watch_leaders, daemon=True)
        self._watch.start()

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def _start_s3(self) -> subprocess.Popen[bytes]:
        import boto3

        log = (self.root / "s3.log").open("ab")
        moto = Path(sys.executable).with_name("moto_server")
        proc = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.s3_port)], stdout=log, stderr=subprocess.STDOUT
        )
        client = boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            region_name="us-east-1",
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        )
        for _ in range(200):
            with contextlib.suppress(Exception):
                client.create_bucket(Bucket=BUCKET)
                break
            time.sleep(0.1)
        self.bucket = client
        return proc

    def _start_worker(self, name: str) -> None:
        home = self.root / name.split("@")[0]
        home.mkdir(exist_ok=True)  # its own data directory, as on its own host
        self.procs[name] = self._spawn(name, ["worker", "--name", name], ZFARM_DATA_DIR=str(home))

    def _spawn(self, name: str, args: list[str], **extra: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name.split('@')[0]}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "zfarm.cli", *args],
            env={**self.env, **extra},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _start_api(self, name: str) -> None:
        home = self.root / name
        home.mkdir(exist_ok=True)
        self.procs[name] = self._spawn(
            name, ["api"], ZFARM_API_PORT=str(self.api_ports[name]), ZFARM_DATA_DIR=str(home)
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.api_ports[name]}"

    def leads(self, name: str) -> bool:
        try:
            match = LEADER.search(httpx.get(f"{self.url(name)}/metrics", timeout=1).text)
        except httpx.HTTPError:
            return False
        return bool(match) and float(match.group(1)) == 1.0

    def _watch_leaders(self) -> None:
        while not self._stop.wait(1.0):
            alive = [n for n in self.api_ports if self.procs[n].poll() is None]
            self.samples.append((time.monotonic(), [n for n in alive if self.leads(n)]))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with self.sessions() as s:
                ready = s.scalar(select(func.count()).select_from(Worker).where(Worker.state == "ready"))
            if ready == len(self.workers):
                return
            time.sleep(0.5)
        raise RuntimeError("workers did not become ready")

    def submit(self, n: int, batch_rows: int) -> list[str]:
        """The catalog in batches, sent through both replicas in turn; each batch has its webhook."""
        ids: list[str] = []
        for name in self.api_ports:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    httpx.get(f"{self.url(name)}/healthz").raise_for_status()
                    break
                time.sleep(0.2)
        replicas = list(self.api_ports)
        for k, start in enumerate(range(0, n, batch_rows)):
            rows = [{"sku": f"sku{i}", "item": f"item {i}"} for i in range(start, min(n, start + batch_rows))]
            body = {
                "template": "chaos {item}",
                "rows": rows,
                "defaults": {"width": 256, "height": 256, "steps": 4},
                "dedup": False,  # every run renders: a database kept from an earlier run would hand its images back
                "callback_url": f"{self.webhooks.url}/batch/{k}",
            }
            response = httpx.post(f"{self.url(replicas[k % 2])}/v1/batches", json=body, timeout=60)
            response.raise_for_status()
            batch_id = response.json()["id"]
            with self.sessions() as s:
                ids.extend(s.scalars(select(Job.id).where(Job.batch_id == batch_id)))
        return ids

    def expected_webhooks(self, n: int, batch_rows: int) -> set[str]:
        return {f"/batch/{k}" for k in range(math.ceil(n / batch_rows))}

    def running_jobs(self) -> list[str]:
        with self.sessions() as s:
            return list(s.scalars(select(Job.id).where(Job.status == "running")))

    def lease_holder(self) -> str | None:
        """The replica whose process holds the farm's lease now (its token is host:pid:random)."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            token = client.get(lease_key(self.env["ZFARM_QUEUE"]))
        finally:
            client.close()
        if not isinstance(token, bytes):
            return None
        pid = token.decode().split(":")[1]
        return next((n for n in self.api_ports if str(self.procs[n].pid) == pid), None)

    def inject(self, kind: str, turn: int) -> None:
        running = self.running_jobs()
        at = time.monotonic()
        if kind == "kill-api":
            # The leader, so its loops must move: the lease's holder in Redis names its process.
            name = self.lease_holder() or "api-a"
            leader_killed = self.lease_holder() == name
            self._kill(name)
            if leader_killed:
                self.api_kills.append(time.time())
            time.sleep(1)
            self._start_api(name)
        elif kind == "kill-worker":
            name = self.workers[turn % len(self.workers)]
            self._kill(name)
            time.sleep(1)
            self._start_worker(name)
        else:
            name = "s3"
            self.s3.kill()
            self.s3.wait()
            time.sleep(1)
            self.s3 = self._start_s3()
        self.faults.append(Fault(at, kind, name, running))

    def takeovers(self) -> list[float]:
        """Seconds from each SIGKILL of the leader replica to the next `became leader` line of any replica (the
        replicas' own log clocks: the gauge, read over HTTP on a busy machine, lags by seconds)."""
        became = sorted(
            dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            for name in self.api_ports
            for stamp, _ in BECAME.findall((self.root / f"{name}.log").read_text(errors="replace"))
        )
        return [min((b - k for b in became if b > k), default=math.inf) for k in self.api_kills]

    def _kill(self, name: str) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def counts(self, ids: list[str]) -> dict[str, int]:
        # This run's jobs only: the database may hold an earlier run's.
        with self.sessions() as s:
            return dict(s.execute(select(Job.status, func.count()).where(Job.id.in_(ids)).group_by(Job.status)).all())

    def stored_per_job(self) -> Counter[str]:
        """Image objects in the bucket by job id (renditions excluded)."""
        counts: Counter[str] = Counter()
        with contextlib.suppress(Exception):
            for page in self.bucket.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="farm/jobs/"):
                for item in page.get("Contents", []):
                    parts = item["Key"].split("/")  # farm/jobs/<2 chars>/<job id>/<index>[-<rendition>].<ext>
                    if len(parts) == 5 and "-" not in parts[4]:
                        counts[parts[3]] += 1
        return counts

    def images_in_bucket(self) -> int:
        return sum(self.stored_per_job().values())

    def images_on_disk(self) -> int:
        return sum(1 for p in self.root.rglob("*") if p.suffix in (".png", ".webp", ".jpeg"))

    def stop(self) -> None:
        self._stop.set()
        self._watch.join(timeout=5)
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.receiver.shutdown()
        self.s3.terminate()
        self.s3.wait()
        self.redis.terminate()
        self.redis.wait()


def run_multi_host(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="zfarm-chaos-mh-"))
    chaos = MultiHostChaos(args, root)
    try:
        chaos.wait_ready()
        started = time.monotonic()
        ids = chaos.submit(args.jobs, args.batch_rows)
        print(f"accepted {len(ids)} jobs; faults in turn ({', '.join(KINDS)}) every ~{args.seconds_between_faults}s")
        finished: dict[str, float] = {}
        deadline = started + args.timeout
        next_fault, turn = time.monotonic() + args.seconds_between_faults, 0
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # the database answers again after a fault
                with chaos.sessions() as s:
                    ended = Job.status.in_(["succeeded", "failed", "dead"])
                    done = list(s.scalars(select(Job.id).where(Job.id.in_(ids), ended)))
                now = time.monotonic()
                for job_id in done:
                    finished.setdefault(job_id, now)
                if len(done) >= len(ids):
                    break
                if now >= next_fault and len(done) < 0.9 * len(ids):
                    chaos.inject(KINDS[turn % len(KINDS)], turn // len(KINDS))
                    turn += 1
                    next_fault = time.monotonic() + args.seconds_between_faults
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        expected_hooks = chaos.expected_webhooks(args.jobs, args.batch_rows)
        hook_deadline = time.monotonic() + 120
        while time.monotonic() < hook_deadline and not expected_hooks <= set(chaos.webhooks.paths):
            time.sleep(0.5)
        time.sleep(5)  # a second delivery, if any were coming, has had time to arrive
        return report(chaos, args, ids, finished, elapsed, expected_hooks)
    finally:
        chaos.stop()


def report(
    chaos: MultiHostChaos,
    args: argparse.Namespace,
    ids: list[str],
    finished: dict[str, float],
    elapsed: float,
    expected_hooks: set[str],
) -> int:
    counts = chaos.counts(ids)
    with chaos.sessions() as s:
        images = select(Image.job_id, func.count()).where(Image.job_id.in_(ids)).group_by(Image.job_id)
        per_job = dict(s.execute(images).all())
        expected = dict(s.execute(select(Job.id, Job.num_images).where(Job.id.in_(ids))).all())
    stored = chaos.stored_per_job()
    duplicated = sum(1 for j, n in per_job.items() if n > expected[j]) + sum(
        1 for j, n in stored.items() if n > expected.get(j, 0)
    )
    lost = len(ids) - sum(counts.get(k, 0) for k in ("succeeded", "failed", "dead", "canceled"))
    hooks = chaos.webhooks.paths
    overlaps = sum(1 for _, leaders in chaos.samples if len(leaders) > 1)
    rec = recovery_seconds(chaos, finished)  # type: ignore[arg-type]  (it reads .faults only)
    result = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "mode": "multi-host",
        "jobs": args.jobs,
        "workers": args.workers,
        "api_replicas": 2,
        "faults": len(chaos.faults),
        "fault_kinds": {k: sum(1 for f in chaos.faults if f.kind == k) for k in KINDS},
        "accepted": len(ids),
        "succeeded": counts.get("succeeded", 0),
        "failed": counts.get("failed", 0),
        "dead": counts.get("dead", 0),
        "lost": lost,
        "duplicated": duplicated,
        "webhooks_expected": len(expected_hooks),
        "webhooks_missing": len(expected_hooks - set(hooks)),
        "webhooks_duplicated": sum(1 for n in hooks.values() if n > 1),
        "images_in_bucket": sum(stored.values()),
        "objects_gone_with_s3_restarts": counts.get("succeeded", 0) - sum(stored.values()),
        "images_on_hosts_disks": chaos.images_on_disk(),
        "leader_samples": len(chaos.samples),
        "leader_overlaps": overlaps,
        "leader_kills": len(chaos.api_kills),
        "takeover_s": [round(t, 2) for t in chaos.takeovers()],
        "recovery_p50_s": round(statistics.median(rec), 2) if rec else None,
        "elapsed_s": round(elapsed, 1),
        "data": str(chaos.root),
    }
    print(json.dumps(result, indent=1))
    ok = lost == 0 and duplicated == 0 and not result["webhooks_missing"] and not result["webhooks_duplicated"]
    return 0 if ok and overlaps == 0 else 1
