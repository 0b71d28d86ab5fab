"""Catalog intake and archive streaming, end to end through the HTTP API (a benchmark, not a test).

Real parts: a `zfarm api` process (uvicorn), a fresh database on the local PostgreSQL server, the local
Redis (a queue name of its own). Measures
1. accepting a 10,000-row CSV upload: wall time from request to 202, rows/s, and the API process' peak RSS;
2. streaming the archive of a 10,000-image batch: the API process' RSS while the zip streams.
   The images are FAKE: small random files written straight to storage, and their jobs marked succeeded
   in SQL; no model runs here. Only the zip streaming and its memory are measured.

    .venv/bin/python bench/accept_csv.py [--rows 10000] [--runs 3] [--image-bytes 20000]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
import redis
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.storage import image_key  # noqa: E402
from migrations.runner import upgrade  # noqa: E402
from zfarm.launcher.redis_server import free_port  # noqa: E402

PG_ADMIN = os.environ.get("ZFARM_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("ZFARM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TEMPLATE = "studio product photo of a {material} {product} on {setting}, soft light, 85mm, high detail"


def catalog_csv(rows: int, salt: str) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["sku", "product", "material", "setting", "width"])
    for i in range(rows):
        # every tenth row overrides its width, as real catalogs mix sizes
        writer.writerow(
            [f"SKU-{salt}-{i:06d}", f"product {i}", "brushed steel", "a marble counter", "768" * (i % 10 == 0)]
        )
    return buf.getvalue().encode()


class RssSampler(threading.Thread):
    """Samples one process' resident memory every `every` seconds."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.proc, self.every, self.samples = psutil.Process(pid), every, []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.perf_counter(), self.proc.memory_info().rss))
            time.sleep(self.every)

    def __enter__(self) -> RssSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join()


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def start_api(db_url: str, data: Path, port: int, queue: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFARM_")}
    env.update(
        {
            "ZFARM_DATABASE_URL": db_url,
            "ZFARM_REDIS_URL": REDIS,
            "ZFARM_DATA_DIR": str(data),
            "ZFARM_API_PORT": str(port),
            "ZFARM_AUTH": "false",
            "ZFARM_QUEUE": queue,
            # the tiny model's byte-level tokenizer: every prompt's tokens are counted, as with real weights
            "ZFARM_MODEL": "tiny",
            "ZFARM_MAX_BATCH_ROWS": "100000",
        }
    )
    log = (data / "api.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "zfarm.cli", "api"], env=env, cwd=REPO, stdout=log, stderr=log)


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"the API exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("the API did not answer within 30 s")


def bench_intake(url: str, pid: int, rows: int, runs: int) -> list[tuple[float, float, int]]:
    results = []
    print(f"  API RSS before the first upload: {mib(psutil.Process(pid).memory_info().rss)}")
    with httpx.Client(base_url=url, timeout=300) as client:
        for run in range(runs):
            data = catalog_csv(rows, f"{run}{uuid.uuid4().hex[:4]}")
            with RssSampler(pid) as rss:
                started = time.perf_counter()
                response = client.post(
                    "/v1/batches", files={"file": ("catalog.csv", data)}, data={"template": TEMPLATE, "seed": str(run)}
                )
                elapsed = time.perf_counter() - started
            assert response.status_code == 202, response.text[:2000]
            assert response.json()["jobs_created"] == rows
            results.append((elapsed, rows / elapsed, max(s for _, s in rss.samples)))
            print(
                f"  run {run + 1}: {rows} rows in {elapsed:.2f} s = {rows / elapsed:,.0f} rows/s, "
                f"API RSS peak {mib(results[-1][2])} (CSV {len(data) / 2**20:.2f} MiB)"
            )
    return results


def fake_finish(db_url: str, batch_id: str, storage: Path, image_bytes: int) -> int:
    """Marks every job succeeded with one FAKE image file of random bytes (no model involved)."""
    engine = sa.create_engine(db_url)
    payload = os.urandom(image_bytes)  # one payload for all: the zip reads every file from disk anyway
    sha = hashlib.sha256(payload).hexdigest()
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM jobs WHERE batch_id = :b"), {"b": batch_id})]
        images = []
        for job_id in ids:
            key = image_key(job_id, 0, "png")
            path = storage / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
            images.append({"job_id": job_id, "key": key, "sha": sha, "n": len(payload)})
        conn.execute(
            sa.text(
                "INSERT INTO images (job_id, index, seed, width, height, format, sha256, bytes, storage_key,"
                " created_at) VALUES (:job_id, 0, 1, 1024, 1024, 'png', :sha, :n, :key, now())"
            ),
            images,
        )
        conn.execute(
            sa.text("UPDATE jobs SET status = 'succeeded', model_id = 'tiny', gpu_seconds = 0.1 WHERE batch_id = :b"),
            {"b": batch_id},
        )
    engine.dispose()
    return len(ids)


def bench_archive(url: str, pid: int, batch_id: str, files: int) -> None:
    total, marks = 0, []
    with RssSampler(pid, every=0.1) as rss, httpx.Client(base_url=url, timeout=600) as client:
        base = psutil.Process(pid).memory_info().rss
        started = time.perf_counter()
        with client.stream("GET", f"/v1/batches/{batch_id}/archive.zip") as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes(1024 * 1024):
                total += len(chunk)
        elapsed = time.perf_counter() - started
    samples = [s for _, s in rss.samples]
    for frac in (0.1, 0.25, 0.5, 0.75, 0.9, 1.0):
        marks.append(mib(samples[min(len(samples) - 1, int(frac * (len(samples) - 1)))]))
    print(
        f"  archive of {files} images: {total / 2**20:.1f} MiB in {elapsed:.1f} s ({total / 2**20 / elapsed:.0f} MiB/s)"
    )
    print(f"  API RSS before {mib(base)}, peak {mib(max(samples))} (+{mib(max(samples) - base)})")
    print(f"  API RSS at 10/25/50/75/90/100 % of the stream: {', '.join(marks)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--image-bytes", type=int, default=20_000)
    args = parser.parse_args()
    name = f"zfarm_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    db_url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    queue = f"zfarm-bench-{uuid.uuid4().hex[:6]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(
        f"zfarm catalog intake benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, "
        f"{psutil.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="zfarm-bench-") as tmp:
        data = Path(tmp)
        upgrade(db_url)
        api = start_api(db_url, data, port, queue)
        try:
            wait_up(url, api)
            print(f"1. accepting a {args.rows}-row CSV upload (PostgreSQL, Redis, uvicorn; best of {args.runs}):")
            results = bench_intake(url, api.pid, args.rows, args.runs)
            best = min(results)
            print(f"  best: {best[1]:,.0f} rows/s; peak API RSS over all runs {mib(max(r[2] for r in results))}")
            print(f"2. streaming the archive of {args.rows} FAKE images of {args.image_bytes} bytes each:")
            with httpx.Client(base_url=url) as client:
                batch_id = client.get("/v1/batches", params={"limit": 1}).json()["batches"][0]["id"]
            n = fake_finish(db_url, batch_id, data / "images", args.image_bytes)
            bench_archive(url, api.pid, batch_id, n)
        finally:
            api.terminate()
            api.wait(timeout=30)
            r = redis.Redis.from_url(REDIS)
            r.delete(queue, f"{queue}.bulk")
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
