"""The process's one store, chosen by ZFARM_STORAGE_URL: a bucket (s3://...) or the data directory (default)."""

from __future__ import annotations

from collections.abc import Callable

from core.s3_storage import S3Storage
from core.settings import FarmSettings
from core.storage import LocalStorage, Storage

Presign = Callable[[str], str | None]  # storage key -> a short-lived link to the object, or None


def open_storage(settings: FarmSettings, check: bool = True, outage_seconds: float = 0.0) -> Storage:
    """The store, checked (it answers, the bucket exists, the credentials may use it) unless `check` is off.

    Raises StorageUnavailable naming the URL and the reason: the API and the worker stop on it at start.
    `outage_seconds`: how long a write waits out a store that does not answer (for workers:
    ZFARM_STORAGE_OUTAGE_SECONDS).
    """
    storage: Storage
    if settings.storage_url:
        storage = S3Storage(
            settings.storage_url, settings.s3_endpoint_url, settings.storage_timeout_seconds, outage_seconds
        )
    else:
        storage = LocalStorage(settings.storage_dir)
    if check:
        storage.check()
    return storage


def presigner(settings: FarmSettings, storage: Storage) -> Presign | None:
    """With ZFARM_PRESIGNED_URLS=true, records, webhooks and manifests link to the bucket itself."""
    if not settings.presigned_urls:
        return None
    seconds = settings.presigned_url_seconds
    return lambda key: storage.url(key, seconds)
