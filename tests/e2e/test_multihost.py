"""Many hosts on one machine: two `zfarm api` replicas, three `zfarm worker` processes (two small cards, one
large), a `zfarm webhooks` sender, one PostgreSQL, one Redis and moto's S3 server, all real processes; each
process on its own empty data directory (no shared disk: images meet only in the bucket).

A job sent to replica A is served by replica B; the leader replica is SIGKILLed in the middle of a batch and
the other takes the loops over within seconds and finishes it; one leader at a time; large images only on the
large card; every webhook delivered once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from migrations.runner import upgrade
from models import Image, Job, make_engine, make_session_factory
from tests.farm_helpers import REPO, start_worker, stop_process_group, wait_for, worker_state
from tests.http_servers import Receiver, webhook_receiver
from tests.multihost_storage import farm_bucket
from tests.replica_helpers import LeaderWatch, make_replicas

pytestmark = pytest.mark.e2e
SMALL_BUDGET = 256 * 256  # ZFARM_LARGE_PIXELS here: 256x256 rows fit any card, 320x320 rows need the large one
ROWS = 12
LARGE_ROWS = {2, 7}
SECRET = "multihost-test-secret-0123456789"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as r:
        yield r


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "zfarm.cli", *args],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_two_replicas_three_workers_one_leader_at_a_time(
    postgres_url: str, redis_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    upgrade(postgres_url)
    sessions = make_session_factory(make_engine(postgres_url))
    queue = f"multihost-{uuid.uuid4().hex[:8]}"
    with farm_bucket() as storage:
        common = {
            **storage.env,
            "ZFARM_REDIS_URL": redis_url,
            "ZFARM_QUEUE": queue,
            "ZFARM_WEBHOOK_QUEUE": f"{queue}-webhooks",
            "ZFARM_WEBHOOK_SECRET": SECRET,
            "ZFARM_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",  # the receiver listens on loopback
            "ZFARM_LARGE_PIXELS": str(SMALL_BUDGET),
            "ZFARM_WORKER_OFFLINE_AFTER_SECONDS": "6",
        }
        replicas = make_replicas(postgres_url, redis_url, queue, tmp_path, **common)
        a, b = replicas
        workers: dict[str, subprocess.Popen[bytes]] = {}
        sender = None
        try:
            for replica in replicas:
                replica.start()
            watch = LeaderWatch(replicas).start()
            watch.wait_single_leader(10)
            sender = _spawn(
                ["webhooks", "--concurrency", "2"],
                {**os.environ, **common, "ZFARM_DATABASE_URL": postgres_url},
                tmp_path / "webhooks.log",
            )
            # Each worker on its own empty data directory, as on its own host; two small cards, one large.
            for name, budget in (("small1@h1", SMALL_BUDGET), ("small2@h2", SMALL_BUDGET), ("large1@h3", None)):
                extra = {**common} | ({"ZFARM_WORKER_MAX_PIXELS": str(budget)} if budget else {})
                home = tmp_path / name.split("@")[0]
                home.mkdir()
                workers[name] = start_worker(postgres_url, home, name, tmp_path / f"{name}.log", **extra)
            for name in workers:
                wait_for(lambda n=name: worker_state(sessions, n) == "ready", 300, f"{name} ready", interval=0.5)
                watch.sample()

            # 1. a job sent to replica A is served by replica B, the same bytes as the stored object
            job = httpx.post(
                f"{a.url}/v1/jobs",
                json={
                    "prompt": "a mug",
                    "width": 256,
                    "height": 256,
                    "steps": 2,
                    "callback_url": receiver.url + "/job",
                },
            ).json()
            wait_for(
                lambda: httpx.get(f"{b.url}/v1/jobs/{job['id']}").json()["status"] == "succeeded",
                120,
                "the job, asked at B",
                interval=0.3,
            )
            record = httpx.get(f"{b.url}/v1/jobs/{job['id']}").json()
            served = httpx.get(f"{b.url}/v1/jobs/{job['id']}/images/0")
            assert served.status_code == 200, served.text
            with sessions() as s:
                key = s.scalar(select(Image.storage_key).where(Image.job_id == job["id"]))
            assert key is not None and served.content == storage.read(key)
            assert hashlib.sha256(served.content).hexdigest() == record["images"][0]["sha256"]

            # 2. a batch through B, large rows among small ones; its leader dies in the middle
            rows = [
                {"sku": f"sku{i}", "product": f"mug {i}", **({"width": 320, "height": 320} if i in LARGE_ROWS else {})}
                for i in range(ROWS)
            ]
            batch = httpx.post(
                f"{b.url}/v1/batches",
                json={
                    "template": "a {product}",
                    "rows": rows,
                    "defaults": {"width": 256, "height": 256, "steps": 2},
                    "callback_url": receiver.url + "/batch",
                },
            )
            assert batch.status_code == 202, batch.text
            batch_id = batch.json()["id"]

            def done() -> int:
                counts = httpx.get(f"{b.url}/v1/batches/{batch_id}", timeout=5).json()["counts"]
                return int(counts.get("succeeded", 0))

            wait_for(lambda: done() >= 2, 180, "the batch under way", interval=0.3)
            leader = {r.name: r for r in replicas}[watch.wait_single_leader(5)]
            other = b if leader is a else a
            killed_at = time.monotonic()
            leader.kill()
            # then: the other replica takes the loops over within seconds, and the batch finishes
            wait_for(lambda: other.leads(), 10, f"replica {other.name} to take over", interval=0.1)
            takeover = time.monotonic() - killed_at
            assert takeover < 6, f"takeover took {takeover:.1f}s"
            status = other.url
            wait_for(
                lambda: httpx.get(f"{status}/v1/batches/{batch_id}", timeout=5).json()["status"] == "succeeded",
                300,
                "the batch to finish after the takeover",
                interval=0.5,
            )
            leader.start()  # the killed replica comes back as a follower
            for _ in range(10):
                watch.sample()
                time.sleep(0.2)
            wait_for(lambda: len(receiver.on("/batch")) >= 1 and len(receiver.on("/job")) >= 1, 60, "the webhooks")
            time.sleep(3)  # a second delivery, if any were coming, has had time to arrive
            watch.stop()
        finally:
            for proc in [*workers.values(), *([sender] if sender else [])]:
                stop_process_group(proc)
            for replica in replicas:
                replica.stop()

        # then: every row rendered once, large rows only on the large card; each webhook delivered once
        with sessions() as s:
            jobs = s.execute(select(Job.id, Job.item_key, Job.worker_name).where(Job.batch_id == batch_id)).all()
            per_job = dict(s.execute(select(Image.job_id, func.count()).group_by(Image.job_id)).all())
        assert len(jobs) == ROWS and all(per_job.get(j.id) == 1 for j in jobs)
        # one object per image in the bucket, none on any host's own disk
        objects = storage.images_per_job()
        assert all(objects[j.id] == 1 for j in jobs) and max(objects.values()) == 1, objects
        assert not [p for p in tmp_path.rglob("*") if p.suffix in (".png", ".webp", ".jpeg")]
        by_row = {j.item_key: j.worker_name for j in jobs}
        assert {by_row[f"sku{i}"] for i in LARGE_ROWS} == {"large1@h3"}, by_row
        assert len({w for w in by_row.values()}) >= 2, f"one worker did everything: {by_row}"
        assert Counter(r.path for r in receiver.requests) == Counter({"/job": 1, "/batch": 1})
        assert not watch.overlaps, f"two leaders at once: {watch.overlaps}"
        assert "became leader" in other.log.read_text()
        print(f"takeover after SIGKILL of replica {leader.name}: {takeover:.2f} s; {watch.samples} leader samples")
