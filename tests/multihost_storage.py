"""The bucket of the multi-host tests: moto's S3-compatible server on a loopback port, one bucket per test.

Every process (API replicas, workers) keeps its own empty data directory, as on separate hosts; images reach
each other only through the bucket. Where moto cannot be imported the test says so and skips.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from zfarm.launcher.redis_server import free_port

# Not real credentials: moto accepts any; they keep boto3 from looking for a profile or an instance role.
S3_ENV = {"AWS_ACCESS_KEY_ID": "zfarm-test", "AWS_SECRET_ACCESS_KEY": "zfarm-test", "AWS_DEFAULT_REGION": "us-east-1"}
PREFIX = "farm"


@dataclass
class FarmBucket:
    env: dict[str, str]  # what every process of the farm gets
    name: str
    client: Any  # the test's own boto3 client: it reads what the farm wrote

    def read(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.name, Key=f"{PREFIX}/{key}")["Body"].read())

    def images_per_job(self) -> Counter[str]:
        """Image objects by job id (renditions excluded): more than a job asked for is a duplicate."""
        counts: Counter[str] = Counter()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=f"{PREFIX}/jobs/"):
            for item in page.get("Contents", []):
                parts = item["Key"].split("/")  # farm/jobs/<2 chars>/<job id>/<index>[-<rendition>].<ext>
                if len(parts) == 5 and "-" not in parts[4]:
                    counts[parts[3]] += 1
        return counts


@contextlib.contextmanager
def farm_bucket() -> Iterator[FarmBucket]:
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        pytest.skip(f"moto[server] cannot be imported ({exc}); `pip install -e '.[dev]'` installs it")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        )
        name = f"zfarm-mh-{uuid.uuid4().hex[:10]}"
        client.create_bucket(Bucket=name)
        env = {**S3_ENV, "ZFARM_STORAGE_URL": f"s3://{name}/{PREFIX}", "ZFARM_S3_ENDPOINT_URL": endpoint}
        yield FarmBucket(env, name, client)
    finally:
        server.stop()
