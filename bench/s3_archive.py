"""The batch archive streamed from a bucket: does the serving process's memory stay flat as the archive grows?

Starts moto's S3-compatible server in a subprocess (its memory is not counted), puts N objects of SIZE bytes
under a batch of N succeeded jobs, and downloads `GET /v1/batches/{id}/archive.zip` through the app in this
process, discarding the chunks. Prints the archive's size, the throughput and this process's peak RSS before
and after the download (Linux VmHWM).

    .venv/bin/python -m bench.s3_archive --jobs 100 --mib 4
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.app import create_app
from core.settings import FarmSettings
from core.storage import image_key
from migrations.runner import upgrade
from models import Image, Job, JobStatus
from zfarm.launcher.redis_server import free_port


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_listening(endpoint: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{endpoint}/moto-api/")
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"moto did not start at {endpoint}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--mib", type=float, default=4.0, help="size of each stored image, MiB")
    args = parser.parse_args()
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    os.environ["ZFARM_QUEUE"] = f"bench-archive-{uuid.uuid4().hex[:6]}"
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_listening(endpoint)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="bench")
        tmp = Path(tempfile.mkdtemp(prefix="zfarm-bench-archive-"))
        db = f"sqlite:///{tmp / 'zfarm.db'}"
        upgrade(db)
        settings = FarmSettings(
            data_dir=tmp,
            database_url=db,
            model="tiny",
            auth=False,
            storage_url="s3://bench/farm",
            s3_endpoint_url=endpoint,
        )
        size = int(args.mib * 1024 * 1024)
        with TestClient(create_app(settings)) as api:
            rows = [{"sku": f"SKU-{i:05d}", "product": f"p{i}"} for i in range(args.jobs)]
            batch = api.post("/v1/batches", json={"template": "a {product}", "rows": rows}).json()
            storage = api.app.state.storage
            payload = os.urandom(size)  # incompressible; one buffer, put under every key
            with api.app.state.sessions() as s:
                for job in s.scalars(select(Job).where(Job.batch_id == batch["id"])):
                    key = image_key(job.id, 0, "png")
                    storage.put(key, payload)
                    s.add(
                        Image(
                            job_id=job.id,
                            index=0,
                            rendition="",
                            seed=job.seed,
                            width=job.width,
                            height=job.height,
                            format="png",
                            sha256=hashlib.sha256(payload).hexdigest(),
                            bytes=size,
                            storage_key=key,
                        )
                    )
                    s.execute(update(Job).where(Job.id == job.id).values(status=JobStatus.SUCCEEDED))
                s.commit()
            del payload
            before = peak_rss_mib()
            started, total = time.perf_counter(), 0
            with api.stream("GET", batch["archive_url"]) as answer:
                for chunk in answer.iter_bytes():
                    total += len(chunk)
            seconds = time.perf_counter() - started
            after = peak_rss_mib()
        print(
            f"archive {total / 2**20:.0f} MiB ({args.jobs} objects of {args.mib:g} MiB) in {seconds:.1f} s "
            f"({total / 2**20 / seconds:.0f} MiB/s); peak RSS {before:.0f} MiB before, {after:.0f} MiB after "
            f"(+{after - before:.0f} MiB)"
        )
    finally:
        moto.terminate()
        moto.wait(timeout=10)


if __name__ == "__main__":
    main()
