"""Does the bulk lane keep the workers busy? (issue 17, item 6)

Two measurements:

  farm      real `zfarm api` (uvicorn) and `zfarm worker` processes (Celery prefork) on the tiny random model:
            the same N jobs sent singly (POST /v1/jobs) and as one N-row batch (POST /v1/batches). Per phase:
            throughput (jobs / (last finish - first start)) and each worker's busy fraction (the union of its
            jobs' claim-to-recorded spans over that window; also the render time alone).
  capacity  the dispatcher (its thread, as the API runs it) against fake consumers: processes that pop ids from
            the bulk queue as fast as they can, ring the dispatcher as a worker's consumer does, and record each
            job through the lifecycle calls a worker makes (claim, succeed). Also the same consumers on a queue
            filled with every id at once (no dispatcher): their own ceiling.

usage: python bench/bulk_dispatch.py farm [--rows 3000] [--workers 3] [--steps 2] [--database-url URL]
       python bench/bulk_dispatch.py capacity [--rows 6000] [--fake-workers 8] [--consumers 2] [--modes ...]
The default database is a fresh one on the local PostgreSQL (postgres@127.0.0.1:5432), dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import redis
import sqlalchemy as sa
from sqlalchemy import func, insert, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from broker_config import bulk_signal  # noqa: E402
from broker_config.celery_app import make_celery  # noqa: E402
from control.dispatcher import Dispatcher, DispatcherThread  # noqa: E402
from control.enqueue import Enqueuer  # noqa: E402
from core.queues import PRECISIONS  # noqa: E402
from migrations.runner import upgrade  # noqa: E402
from models import Batch, Job, JobStatus, Lane, Worker, lifecycle, make_engine, make_session_factory  # noqa: E402
from models.base import utcnow  # noqa: E402
from models.db import transaction  # noqa: E402
from zfarm.launcher.redis_server import free_port  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
FINAL = ("succeeded", "failed", "canceled", "dead")


@contextlib.contextmanager
def fresh_database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"zfarm_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ---- farm: real API and workers -------------------------------------------------------------------


class Farm:
    def __init__(self, args: argparse.Namespace, db_url: str, root: Path) -> None:
        self.root, self.db_url = root, db_url
        upgrade(db_url)
        self.sessions = make_session_factory(make_engine(db_url))
        self.port = free_port()
        self.env = {
            **os.environ,
            "ZFARM_DATABASE_URL": db_url,
            "ZFARM_REDIS_URL": args.redis_url,
            "ZFARM_DATA_DIR": str(root),
            "ZFARM_MODEL": "tiny",
            "ZFARM_DEVICE": "cpu",
            "ZFARM_WARMUP_SIZE": "256",
            "ZFARM_AUTH": "false",
            "ZFARM_API_PORT": str(self.port),
            "ZFARM_HEARTBEAT_SECONDS": "2",
            "ZFARM_QUEUE": f"bench-bulk-{uuid.uuid4().hex[:8]}",
            "ZFARM_MAX_QUEUED_JOBS_PER_TENANT": "100000",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.procs = [self._spawn("api", ["api"])]
        self.names = [f"bench{i}@{socket.gethostname()}" for i in range(args.workers)]
        self.procs += [self._spawn(n, ["worker", "--name", n, "--loglevel", "WARNING"]) for n in self.names]
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name.split('@')[0]}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "zfarm.cli", *argv],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with self.sessions() as s:
                ready = s.scalar(select(func.count()).select_from(Worker).where(Worker.state == "ready"))
            api_up = False
            with contextlib.suppress(httpx.TransportError):
                api_up = self.http.get("/healthz").status_code == 200
            if ready == len(self.names) and api_up:
                return
            time.sleep(1)
        raise RuntimeError(f"the farm did not start: see the logs in {self.root}")

    def wait_done(self, ids: list[str] | None = None, batch_id: str | None = None) -> None:
        while True:
            with self.sessions() as s:
                where = Job.batch_id == batch_id if batch_id else Job.id.in_(ids or [])
                left = s.scalar(select(func.count()).select_from(Job).where(where, Job.status.not_in(FINAL)))
            if not left:
                return
            time.sleep(1)

    def stop(self) -> None:
        self.http.close()
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def busy_union(spans: list[tuple[datetime, datetime]], lo: datetime, hi: datetime) -> float:
    """Seconds of [lo, hi] covered by the spans (a finisher thread may record a job after the next one started)."""
    total, end = 0.0, lo
    for start, finish in sorted(spans):
        start, finish = max(start, end), min(finish, hi)
        if finish > start:
            total += (finish - start).total_seconds()
            end = finish
    return total


def phase_figures(
    farm: Farm, where: sa.ColumnElement[bool], names: list[str], accepted_at: datetime
) -> dict[str, object]:
    with farm.sessions() as s:
        rows = s.execute(
            select(Job.worker_name, Job.started_at, Job.finished_at, Job.gpu_seconds, Job.status).where(where)
        ).all()
    ok = [r for r in rows if r.status == "succeeded" and r.started_at and r.finished_at]
    lo, hi = min(r.started_at for r in ok), max(r.finished_at for r in ok)
    wall = (hi - lo).total_seconds()
    per_worker = {}
    for name in names:
        mine = [r for r in ok if r.worker_name == name]
        per_worker[name] = {
            "jobs": len(mine),
            "busy": busy_union([(r.started_at, r.finished_at) for r in mine], lo, hi) / wall,
            "render": sum(r.gpu_seconds or 0.0 for r in mine) / wall,
        }
    # After the last job was accepted: single jobs are sent one request each while the workers already render,
    # and those requests take CPU from them on a small machine; a batch is one request.
    after = [r for r in ok if r.finished_at > accepted_at]
    steady = len(after) / (hi - max(accepted_at, lo)).total_seconds()
    return {
        "jobs": len(rows),
        "succeeded": len(ok),
        "wall_s": wall,
        "jobs_per_s": len(ok) / wall,
        "steady_jobs_per_s": steady,
        "workers": per_worker,
    }


def run_farm(args: argparse.Namespace) -> None:
    with fresh_database(args.database_url) as db_url:
        root = Path(tempfile.mkdtemp(prefix="zfarm-bulk-bench-"))
        farm = Farm(args, db_url, root)
        try:
            farm.wait_ready()
            size = {"width": args.size, "height": args.size, "steps": args.steps}
            results = {}
            for phase in args.phases.split(","):
                sent = time.monotonic()
                if phase == "single":

                    def submit(i: int) -> str:
                        body = {"prompt": f"studio photo of a product {i}", "seed": i, "dedup": False, **size}
                        answer = farm.http.post("/v1/jobs", json=body)
                        answer.raise_for_status()
                        return str(answer.json()["id"])

                    with ThreadPoolExecutor(4) as pool:
                        ids = list(pool.map(submit, range(args.rows)))
                    accepted = time.monotonic() - sent
                    accepted_at = utcnow()
                    farm.wait_done(ids=ids)
                    where = Job.id.in_(ids)
                else:
                    rows = [{"sku": f"SKU-{i:05d}", "product": f"product {i}"} for i in range(args.rows)]
                    body = {"template": "studio photo of a {product}", "rows": rows, "defaults": size, "dedup": False}
                    answer = farm.http.post("/v1/batches", json=body)
                    answer.raise_for_status()
                    accepted = time.monotonic() - sent
                    accepted_at = utcnow()
                    batch_id = answer.json()["id"]
                    farm.wait_done(batch_id=batch_id)
                    where = Job.batch_id == batch_id
                figures = phase_figures(farm, where, farm.names, accepted_at)
                figures["accept_s"] = accepted
                results[phase] = figures
                print_phase(phase, figures)
            if {"single", "bulk"} <= results.keys():
                for key in ("jobs_per_s", "steady_jobs_per_s"):
                    ratio = float(results["bulk"][key]) / float(results["single"][key])  # type: ignore[arg-type]
                    print(f"bulk / single {key}: {ratio:.3f}")
        finally:
            farm.stop()


def print_phase(phase: str, figures: dict[str, object]) -> None:
    workers = figures["workers"]
    assert isinstance(workers, dict)
    busy = ", ".join(f"{w['busy'] * 100:.1f}%" for w in workers.values())
    render = ", ".join(f"{w['render'] * 100:.1f}%" for w in workers.values())
    print(
        f"{phase}: {figures['succeeded']}/{figures['jobs']} succeeded in {figures['wall_s']:.1f} s "
        f"= {figures['jobs_per_s']:.2f} jobs/s (accepted in {figures['accept_s']:.1f} s; "
        f"{figures['steady_jobs_per_s']:.2f} jobs/s after that); "
        f"busy per worker {busy}; render time per worker {render}; jobs per worker "
        f"{[w['jobs'] for w in workers.values()]}",
        flush=True,
    )


# ---- capacity: the dispatcher against fake consumers ----------------------------------------------------------


def consume(
    db_url: str, redis_url: str, queue: str, bulk: str, ring: bool, record: bool, stop_at: int, out: mp.Queue
) -> None:
    """One fake worker: pop, ring, claim, succeed; as fast as it can. Reports (jobs, seconds it waited for an id
    that then came, the wall-clock time of its last job)."""
    from control.broker_inspect import _job_id

    sessions = make_session_factory(make_engine(db_url))
    r = redis.Redis.from_url(redis_url)
    done, waited, last = 0, 0.0, 0.0
    while True:
        t0 = time.perf_counter()
        got = r.brpop([bulk], timeout=1)
        if got is None:
            if int(r.get(f"{queue}:bench-done") or 0) >= stop_at:
                break
            continue
        waited += time.perf_counter() - t0
        if ring:
            bulk_signal.ring(r, queue, bulk)  # what worker/bulk_taken.py does as the consumer takes an id
        job_id = _job_id(got[1])
        if not record:  # pop-only: the dispatcher's own pace, without the database work of the consumers
            done += 1
            last = time.time()
            r.incr(f"{queue}:bench-done")
            continue
        with transaction(sessions) as s:
            job = s.get(Job, job_id)
            if job is None or not lifecycle.claim(s, job, worker_name="fake"):
                continue
        with transaction(sessions) as s:
            lifecycle.succeed(s, job_id, 0.0, None)
        done += 1
        last = time.time()
        r.incr(f"{queue}:bench-done")
    out.put((done, waited, last))


def seed_rows(sessions: sa.orm.sessionmaker, rows: int, fake_workers: int) -> None:
    with transaction(sessions) as s:
        batch = Batch(template="{p}", key_column="sku", seed=0, source="json", rows=rows, name="bench")
        s.add(batch)
        s.flush()
        now = utcnow()
        for lo in range(0, rows, 1000):
            s.execute(
                insert(Job),
                [
                    {
                        "id": uuid.uuid4().hex,
                        "prompt": "p",
                        "width": 256,
                        "height": 256,
                        "steps": 2,
                        "guidance_scale": 0.0,
                        "seed": i,
                        "batch_id": batch.id,
                        "row_number": i + 1,
                        "lane": Lane.BULK,
                        "status": JobStatus.QUEUED,
                        "created_at": now,
                    }
                    for i in range(lo, min(rows, lo + 1000))
                ],
            )
        for n in range(fake_workers):
            s.add(Worker(name=f"fake{n}", hostname="h", pid=1, device="cpu", state="ready", last_heartbeat=now))


class TimedDispatcher(Dispatcher):
    """The API's dispatcher, timing each of its rounds: (seconds, ids sent)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rounds: list[tuple[float, int]] = []

    def top_up(self, tiers: Iterable[str] = PRECISIONS, *, thorough: bool = True) -> int:
        started = time.perf_counter()
        sent = super().top_up(tiers, thorough=thorough)
        self.rounds.append((time.perf_counter() - started, sent))
        return sent


def run_capacity(args: argparse.Namespace) -> None:

    ctx = mp.get_context("spawn")  # the consumers start clean, not forked from a process with threads
    for mode in args.modes.split(","):
        with fresh_database(args.database_url) as db_url:
            upgrade(db_url)
            engine = make_engine(db_url)
            sessions = make_session_factory(engine)
            seed_rows(sessions, args.rows, args.fake_workers)
            queue = f"bench-cap-{uuid.uuid4().hex[:8]}"
            enqueuer = Enqueuer(make_celery(args.redis_url), sessions, queue)
            # offline_after: the fake workers never beat; they must stay live for the whole run
            dispatcher = TimedDispatcher(sessions, enqueuer, args.redis_url, offline_after=3600)
            rounds = dispatcher.rounds
            out: mp.Queue = ctx.Queue()
            if mode == "prefilled":
                with sessions() as s:
                    ids = list(s.scalars(select(Job.id).order_by(Job.row_number)))
                enqueuer.send(ids, Lane.BULK, queue=dispatcher.queue)
            started = time.time()
            consumers = [
                ctx.Process(
                    target=consume,
                    args=(
                        db_url,
                        args.redis_url,
                        queue,
                        dispatcher.queue,
                        mode != "prefilled",
                        mode != "pop-only",
                        args.rows,
                        out,
                    ),
                )
                for _ in range(args.consumers)
            ]
            for c in consumers:
                c.start()
            thread = DispatcherThread(dispatcher, every=0.5)
            if mode != "prefilled":
                thread.start()
                thread.wake()
            reports = [out.get(timeout=1800) for _ in consumers]
            elapsed = max(last for *_, last in reports) - started
            for c in consumers:
                c.join()
            thread.stop()
            if thread.is_alive():
                thread.join(timeout=5)
            done = sum(n for n, *_ in reports)
            idle = sum(w for _, w, _ in reports)
            line = (
                f"{mode}: {done} jobs in {elapsed:.1f} s = {done / elapsed:.0f} jobs/s through {args.consumers} "
                f"consumer process(es); consumers waited for ids {max(idle, 0) / (elapsed * len(reports)) * 100:.1f} % "
                "of their time"
            )
            busy = [(t, n) for t, n in rounds if n]
            if busy:
                seconds = sum(t for t, _ in busy)
                sent = sum(n for _, n in busy)
                line += (
                    f"; {len(rounds)} rounds ({len(busy)} sent ids), median "
                    f"{statistics.median(t for t, _ in busy) * 1000:.1f} ms per sending round, "
                    f"{sent / len(busy):.1f} ids per sending round: the dispatcher sent "
                    f"{sent / seconds:.0f} ids per second of its own time"
                )
            print(line, flush=True)
            redis.Redis.from_url(args.redis_url).delete(f"{queue}:bench-done", dispatcher.queue)
            dispatcher.close()
            engine.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["farm", "capacity"])
    ap.add_argument("--rows", type=int, default=None, help="jobs per phase (farm: 3000, capacity: 6000)")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--phases", default="single,bulk")
    ap.add_argument("--fake-workers", type=int, default=8)
    ap.add_argument("--consumers", type=int, default=2)
    ap.add_argument(
        "--modes",
        default="dispatcher,prefilled,pop-only",
        help="dispatcher: ids from the dispatcher, consumers record each job; prefilled: every id queued at once, "
        "no dispatcher (the consumers' own ceiling); pop-only: ids from the dispatcher, consumers record nothing",
    )
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--redis-url", default=os.environ.get("ZFARM_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args()
    if args.mode == "farm":
        args.rows = args.rows or 3000
        run_farm(args)
    else:
        args.rows = args.rows or 6000
        run_capacity(args)
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
