"""A real S3-compatible server for the storage tests: moto's server mode on a free loopback port.

moto is in the dev extra (CI installs it); where it cannot be imported these tests skip and say why. Each
test gets a bucket of its own on the one server, so tests never see each other's objects.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Not real credentials: moto accepts any; they keep boto3 from looking for a profile or an instance role.
S3_ENV = {"AWS_ACCESS_KEY_ID": "zfarm-test", "AWS_SECRET_ACCESS_KEY": "zfarm-test", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Bucket:
    name: str
    endpoint: str
    client: Any  # a boto3 S3 client of the test's own: it reads what the farm wrote

    @property
    def url(self) -> str:
        return f"s3://{self.name}/farm"

    def object(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.name, Key=f"farm/{key}")["Body"].read())

    def keys(self) -> list[str]:
        answer = self.client.list_objects_v2(Bucket=self.name)
        return sorted(o["Key"] for o in answer.get("Contents", []))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        pytest.skip(f"moto[server] cannot be imported ({exc}); `pip install -e '.[dev]'` installs it")
    from zfarm.launcher.redis_server import free_port

    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def bucket(s3_endpoint: str) -> Bucket:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    name = f"zfarm-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return Bucket(name, s3_endpoint, client)
