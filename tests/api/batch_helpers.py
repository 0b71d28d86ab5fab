"""Shared pieces of the batch API tests: an app on a fresh database, and what it wrote or queued."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from core.queues import bulk_queue_name
from core.settings import FarmSettings, get_settings
from migrations.runner import upgrade
from models import Batch, Job


@contextmanager
def batch_api(database_url: str, data_dir: Path, redis_url: str, **overrides: object) -> Iterator[TestClient]:
    upgrade(database_url)
    settings = FarmSettings(
        **{"data_dir": data_dir, "database_url": database_url, "model": "tiny", "auth": False, **overrides}
    )
    queues = _queues()
    r = redis.Redis.from_url(redis_url)
    r.delete(*queues)
    try:
        with TestClient(create_app(settings)) as client:
            yield client
    finally:
        r.delete(*queues)


def _queues() -> list[str]:
    queue = get_settings().queue
    return [queue, bulk_queue_name(queue)]


def written_and_queued(api: TestClient, redis_url: str) -> tuple[int, int, int]:
    """(batches, jobs, ids waiting in Redis): a refused request must leave all three as they were."""
    with api.app.state.sessions() as s:
        batches = s.scalar(select(func.count()).select_from(Batch))
        jobs = s.scalar(select(func.count()).select_from(Job))
    r = redis.Redis.from_url(redis_url)
    return int(batches or 0), int(jobs or 0), sum(int(r.llen(q)) for q in _queues())


def rows(n: int, **extra: object) -> list[dict[str, object]]:
    return [{"sku": f"SKU-{i:03d}", "product": f"product {i}", **extra} for i in range(1, n + 1)]


TEMPLATE = "studio photo of a {product}"
