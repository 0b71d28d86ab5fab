"""A bucket that stops answering for a while: a worker's write waits it out; past the wait it fails, saying why.

The S3 server here is a moto server of the test's own (stopped and started again on its port); moto keeps its
buckets in the process, so the bucket is still there when it comes back, as a restarted MinIO's would be.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from core.s3_storage import S3Storage
from core.storage import StorageError
from zfarm.launcher.redis_server import free_port

pytest.importorskip("moto.server", reason="moto[server] is in the dev extra: `pip install -e '.[dev]'`")


@pytest.fixture
def own_server(s3_endpoint: str) -> Iterator[tuple[object, str]]:
    # s3_endpoint (tests/storage/conftest.py) sets the fake credentials for the session.
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="zfarm-outage")
    try:
        yield server, endpoint
    finally:
        server.stop()


def test_a_write_waits_for_a_store_that_comes_back(own_server: tuple[object, str]) -> None:
    server, endpoint = own_server
    store = S3Storage("s3://zfarm-outage/farm", endpoint, timeout_seconds=1, outage_seconds=60)
    server.stop()  # type: ignore[attr-defined]
    done: list[float] = []
    errors: list[BaseException] = []

    def write() -> None:
        started = time.monotonic()
        try:
            store.put("images/job1/0.png", b"rendered bytes")
            done.append(time.monotonic() - started)
        except BaseException as exc:  # reported below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(4)
    assert not done and not errors, "the write returned while the store was down"
    server.start()  # type: ignore[attr-defined]
    writer.join(timeout=60)
    assert not errors, errors
    assert done and done[0] >= 4
    body = store.open("images/job1/0.png").read()
    assert body == b"rendered bytes"


def test_past_the_wait_the_write_fails_naming_the_store_and_why(own_server: tuple[object, str]) -> None:
    server, endpoint = own_server
    store = S3Storage("s3://zfarm-outage/farm", endpoint, timeout_seconds=1, outage_seconds=2)
    server.stop()  # type: ignore[attr-defined]
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        store.put("images/job2/0.png", b"x")
    assert time.monotonic() - started >= 2
    message = str(caught.value)
    assert "s3://zfarm-outage/farm/images/job2/0.png" in message
    assert "does not answer (waited 2 s for it)" in message


def test_a_refusal_is_not_waited_for(own_server: tuple[object, str]) -> None:
    _, endpoint = own_server
    store = S3Storage("s3://no-such-bucket-here/farm", endpoint, timeout_seconds=1, outage_seconds=60)
    started = time.monotonic()
    with pytest.raises(StorageError, match="NoSuchBucket"):
        store.put("images/job3/0.png", b"x")
    assert time.monotonic() - started < 20  # an answer that refuses fails at once, not after the outage wait
