"""S3Storage against a real S3-compatible server (moto): the calls, the refusals, presigned links."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import ValidationError

from core.s3_storage import S3Storage
from core.settings import FarmSettings
from core.storage import StorageError, StorageUnavailable, image_key, lora_key, read_chunks
from core.storage_setup import open_storage, presigner
from tests.storage.conftest import Bucket
from zfarm.launcher.redis_server import free_port

JOB = "0123456789abcdef0123456789abcdef"


def test_objects_live_under_the_prefix_and_stream_in_chunks(bucket: Bucket) -> None:
    store = S3Storage(bucket.url, bucket.endpoint)
    key = image_key(JOB, 0, "png")
    data = bytes(range(256)) * 4000  # ~1 MB: several chunks
    store.put(key, data)
    assert bucket.keys() == [f"farm/{key}"]
    assert bucket.object(key) == data
    assert store.exists(key)
    chunks = list(read_chunks(store.open(key), 256 * 1024))
    assert len(chunks) > 1 and b"".join(chunks) == data
    head = bucket.client.head_object(Bucket=bucket.name, Key=f"farm/{key}")
    assert head["ContentType"] == "image/png"
    store.delete(key)
    assert not store.exists(key) and bucket.keys() == []


def test_a_missing_object_is_file_not_found(bucket: Bucket) -> None:
    store = S3Storage(bucket.url, bucket.endpoint)
    with pytest.raises(FileNotFoundError, match=f"s3://{bucket.name}/farm/jobs/01/{JOB}/3.png is not in the bucket"):
        store.open(image_key(JOB, 3, "png"))


def test_keys_not_built_by_the_server_are_refused(bucket: Bucket) -> None:
    store = S3Storage(bucket.url, bucket.endpoint)
    for bad in ("../x.png", "/etc/passwd", "jobs/../../x", "Jobs/A.png"):
        with pytest.raises(ValueError, match="not a server-built key"):
            store.put(bad, b"x")
    assert bucket.keys() == []


def test_adapter_files_upload_from_disk(bucket: Bucket, tmp_path: Path) -> None:
    source = tmp_path / "a.safetensors"
    source.write_bytes(b"\x00" * (9 * 1024 * 1024))  # over boto3's 8 MiB part size: a multipart upload
    store = S3Storage(bucket.url, bucket.endpoint)
    key = lora_key("ab" * 32)
    store.put_file(key, source)
    assert bucket.object(key) == source.read_bytes()


def test_a_refused_write_raises_with_the_key_and_the_reason(bucket: Bucket) -> None:
    store = S3Storage(bucket.url, bucket.endpoint)
    bucket.client.delete_bucket(Bucket=bucket.name)
    with pytest.raises(StorageError, match=rf"writing s3://{bucket.name}/farm/jobs/.*/0.png failed: NoSuchBucket"):
        store.put(image_key(JOB, 0, "png"), b"x")


def test_a_store_that_does_not_answer_stops_the_start_with_url_and_reason(bucket: Bucket) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = FarmSettings(storage_url=bucket.url, s3_endpoint_url=dead, storage_timeout_seconds=1)
    with pytest.raises(StorageUnavailable) as info:
        open_storage(settings)
    assert str(info.value).startswith(f"storage {bucket.url} at {dead} cannot be used: EndpointConnectionError")
    missing = FarmSettings(storage_url="s3://no-such-bucket-here", s3_endpoint_url=bucket.endpoint)
    with pytest.raises(StorageUnavailable, match="s3://no-such-bucket-here .* no such bucket"):
        open_storage(missing)


def test_presigned_links_fetch_the_object_and_are_signed_to_expire(bucket: Bucket) -> None:
    settings = FarmSettings(
        storage_url=bucket.url, s3_endpoint_url=bucket.endpoint, presigned_urls=True, presigned_url_seconds=2
    )
    store = open_storage(settings)
    key = image_key(JOB, 0, "webp")
    store.put(key, b"RIFF-bytes")
    presign = presigner(settings, store)
    assert presign is not None
    url = presign(key)
    assert url is not None and url.startswith(f"{bucket.endpoint}/{bucket.name}/farm/{key}?")
    assert httpx.get(url).content == b"RIFF-bytes"
    # Signed now, valid for the setting's 2 s. moto does not refuse expired links (it checks no expiry), so
    # the expiry is read from the signed link itself: S3 and every S3-compatible store refuse it after that.
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["2"]
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"storage_url": "s3://Bad_Bucket"}, "storage_url must be s3://BUCKET"),
        ({"storage_url": "/data/images"}, "storage_url must be s3://BUCKET"),
        ({"storage_url": "s3://bucket/a/../b"}, "prefix must not contain '..'"),
        ({"s3_endpoint_url": "minio:9000"}, "s3_endpoint_url must be an http:// or https:// URL"),
        ({"presigned_urls": True}, "presigned_urls=true needs ZFARM_STORAGE_URL"),
        ({"storage_url": "s3://bucket", "presigned_urls": True, "presigned_url_seconds": 0}, "greater than or equal"),
        ({"storage_url": "s3://bucket", "presigned_url_seconds": 8 * 86400}, "less than or equal to 604800"),
    ],
)
def test_bad_storage_settings_are_refused(env: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FarmSettings(**env)
