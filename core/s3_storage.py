"""The Storage calls against an S3-compatible bucket (AWS S3, MinIO, R2, Ceph, moto), through boto3.

boto3 because it is the reference S3 client that every S3-compatible service tests against: its streaming
bodies let the API pass bytes through in chunks, it presigns GET links locally (no request to the store),
uploads large adapter files in parts, and retries transient errors (5xx, throttling, dropped connections)
itself. Credentials come from boto3's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE,
an instance role), never from a zfarm setting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionClosedError, ReadTimeoutError
from botocore.exceptions import ConnectionError as StoreConnectionError

from core.storage import StorageError, StorageUnavailable, check_key, parse_s3_url

CONTENT_TYPES = {
    "png": "image/png",
    "webp": "image/webp",
    "jpg": "image/jpeg",
    "safetensors": "application/octet-stream",
}
MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
# The store did not answer at all (down, restarting, the network away), as opposed to an answer that refuses.
UNREACHABLE = (StoreConnectionError, ConnectionClosedError, ReadTimeoutError)
log = logging.getLogger(__name__)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{err.get('Code', '?')} (HTTP {status}): {err.get('Message') or 'no message'}"
    return f"{type(exc).__name__}: {exc}"


def _missing(exc: Exception) -> bool:
    return isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code")) in MISSING_CODES


class S3Storage:
    """Objects under `prefix` in one bucket; keys are core/storage.py's server-built keys."""

    def __init__(
        self, url: str, endpoint_url: str | None = None, timeout_seconds: float = 10.0, outage_seconds: float = 0.0
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        # How long a write waits out a store that does not answer (past boto3's own 3 tries) before it fails. A
        # worker waits (a rendered image is GPU time: a store restarting must not fail the job); the API does not
        # (its client is waiting and can send again).
        self.outage_seconds = outage_seconds
        self.url_text = url + (f" at {endpoint_url}" if endpoint_url else "")
        config = Config(
            connect_timeout=timeout_seconds,
            read_timeout=max(timeout_seconds, 60.0),
            # "standard" retries throttling, 5xx and connection errors 3 times with backoff; a refusal
            # (403, 404) is not retried: it would be refused again.
            retries={"max_attempts": 3, "mode": "standard"},
            signature_version="s3v4",
            # One connection per download the API streams at once (threadpool) and per finisher thread.
            max_pool_connections=64,
            # Path-style addressing for a custom endpoint: MinIO and most self-hosted stores have no
            # per-bucket DNS names.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        # A session of its own: credentials are read from the environment now, not from boto3's default
        # session, which keeps the first credentials it resolved for the life of the process.
        self.client: Any = boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _fail(self, what: str, key: str, exc: Exception, why: str = "") -> StorageError:
        reason = f"{why}: {_reason(exc)}" if why else _reason(exc)
        return StorageError(f"{what} s3://{self.bucket}/{self._key(key)} failed: {reason}")

    def put(self, key: str, data: bytes) -> None:
        ext = key.rsplit(".", 1)[-1]
        content_type = CONTENT_TYPES.get(ext, "application/octet-stream")
        self._write(
            key,
            lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type),
        )

    def put_file(self, key: str, source: Path) -> None:
        # In parts for a large file (an adapter may be 512 MiB): never the whole file in memory.
        self._write(key, lambda: self.client.upload_file(str(source), self.bucket, self._key(key)))

    def _write(self, key: str, call: Callable[[], object]) -> None:
        """One write; while the store does not answer, tried again with backoff for up to `outage_seconds`."""
        deadline = time.monotonic() + self.outage_seconds
        pause = 1.0
        while True:
            try:
                call()
                return
            except UNREACHABLE as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    waited = f" (waited {self.outage_seconds:.0f} s for it)" if self.outage_seconds else ""
                    raise self._fail("writing", key, exc, f"the store does not answer{waited}") from exc
                log.warning("store %s does not answer; writing %s again in %.0f s", self.url_text, key, pause)
                time.sleep(min(pause, left))
                pause = min(pause * 2, 15.0)
            except (ClientError, BotoCoreError) as exc:
                raise self._fail("writing", key, exc) from exc

    def open(self, key: str) -> BinaryIO:
        """The object's streaming body: read it in chunks (read_chunks), never whole."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            if _missing(exc):
                raise FileNotFoundError(f"s3://{self.bucket}/{self._key(key)} is not in the bucket") from exc
            raise self._fail("reading", key, exc) from exc
        return cast(BinaryIO, answer["Body"])

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            if _missing(exc):
                return False
            raise self._fail("checking", key, exc) from exc
        return True

    def path(self, key: str) -> Path | None:
        return None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("deleting", key, exc) from exc

    def url(self, key: str, seconds: int) -> str | None:
        # Signed here, with no request to the store: a record with 8 images costs no round trips.
        return str(
            self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=seconds
            )
        )

    def check(self) -> None:
        """At start: the bucket answers, exists and these credentials may use it; else StorageUnavailable."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            if _missing(exc):
                reason = "no such bucket (create it first)"
            elif isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code")) in ("403", "400"):
                reason = f"access refused with these credentials ({_reason(exc)})"
            else:
                reason = _reason(exc)
            raise StorageUnavailable(f"storage {self.url_text} cannot be used: {reason}") from exc
