"""GET /metrics: the farm's numbers in Prometheus text format, read from SQL and Redis at scrape time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.keys import create_key
from api.metrics import FarmCollector
from core.settings import FarmSettings
from migrations.runner import upgrade
from models import DeliveryState, Image, Job, JobStatus, WebhookDelivery, Worker
from models.base import utcnow


def _job(status: str, latency: float | None = None, gpu: float | None = None, error: str | None = None) -> Job:
    created = utcnow() - timedelta(minutes=5)
    job = Job(prompt="p", width=256, height=256, steps=8, guidance_scale=0.0, seed=1, status=status)
    job.created_at, job.gpu_seconds, job.error = created, gpu, error
    if latency is not None:
        job.finished_at = created + timedelta(seconds=latency)
    return job


def _image(index: int) -> Image:
    return Image(
        index=index, seed=index, width=256, height=256, format="png", sha256="0" * 64, bytes=1, storage_key="k"
    )


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_report_jobs_images_latency_failures_workers_queues(
    sessions: sessionmaker[Session], redis_url: str
) -> None:
    # given: a farm's history written straight into its tables
    fast, slow = _job("succeeded", latency=1.5, gpu=0.3), _job("succeeded", latency=40.0, gpu=12.0)
    fast.images, slow.images = [_image(0), _image(1)], [_image(0)]
    fast.webhook = WebhookDelivery(url="http://h/x", state=DeliveryState.DELIVERED)
    jobs = [
        fast,
        slow,
        _job("failed", latency=3, error="RenderError: the pipeline produced NaN or infinite pixels, again after ..."),
        _job("failed", latency=9, error="exceeded the time limit of 1800 s per job"),
        _job(
            "dead", latency=9, error="gave up after 3 attempts (cap 3); last error: requeued: its worker went offline"
        ),
        _job("queued"),
    ]
    jobs[-1].webhook = WebhookDelivery(url="http://h/y", state=DeliveryState.WAITING)
    now = utcnow()
    workers = [
        Worker(name="gpu0@a", hostname="a", pid=1, device="cuda", gpu_name="H200", state="ready", last_heartbeat=now,
               gpu_memory_used_mib=1000, gpu_memory_total_mib=143_000),
        Worker(name="gpu1@a", hostname="a", pid=2, device="cuda", gpu_name="H200", state="busy",
               last_heartbeat=now - timedelta(minutes=10), gpu_memory_used_mib=5, gpu_memory_total_mib=143_000),
    ]  # fmt: skip
    with sessions() as s:
        s.add_all(jobs + workers)
        s.commit()
    queue = f"zfarm-test-metrics-{jobs[0].id[:8]}"
    r = redis.Redis.from_url(redis_url)
    r.rpush(queue, b"m1", b"m2")
    r.rpush(queue + "\x06\x169", b"m3")  # a message sent with a priority lives in a sub-list
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FarmCollector(sessions, redis_url, [queue, "zfarm-test-empty"], offline_after=30))
    try:
        # when
        samples = _samples(generate_latest(registry).decode())
    finally:
        r.delete(queue, queue + "\x06\x169")

    # then
    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert {st.value: value("zfarm_jobs", status=st.value) for st in JobStatus} == {
        "queued": 1, "running": 0, "succeeded": 2, "failed": 2, "canceled": 0, "dead": 1,
    }  # fmt: skip
    assert value("zfarm_images_rendered_total") == 3
    assert value("zfarm_job_latency_seconds_bucket", le="1.0") == 0
    assert value("zfarm_job_latency_seconds_bucket", le="2.0") == 1
    assert value("zfarm_job_latency_seconds_bucket", le="30.0") == 1
    assert value("zfarm_job_latency_seconds_bucket", le="60.0") == 2
    assert value("zfarm_job_latency_seconds_count") == 2
    assert value("zfarm_job_latency_seconds_sum") == pytest.approx(41.5, abs=0.01)
    assert value("zfarm_job_gpu_seconds_bucket", le="0.5") == 1
    assert value("zfarm_job_gpu_seconds_bucket", le="10.0") == 1
    assert value("zfarm_job_gpu_seconds_bucket", le="30.0") == 2
    assert value("zfarm_job_gpu_seconds_sum") == pytest.approx(12.3)
    assert value("zfarm_job_failures_total", reason="bad_output") == 1
    assert value("zfarm_job_failures_total", reason="time_limit") == 1
    assert value("zfarm_job_failures_total", reason="gave_up") == 1
    assert value("zfarm_workers", state="ready") == 1 and value("zfarm_workers", state="offline") == 1
    assert value("zfarm_workers", state="busy") == 0
    assert value("zfarm_worker_gpu_memory_used_bytes", worker="gpu0@a", gpu="H200") == 1000 * 2**20
    assert value("zfarm_worker_gpu_memory_total_bytes", worker="gpu0@a", gpu="H200") == 143_000 * 2**20
    assert not any(name.startswith("zfarm_worker_gpu") and ("worker", "gpu1@a") in labels for name, labels in samples)
    assert value("zfarm_webhook_deliveries", state="delivered") == 1
    assert value("zfarm_webhook_deliveries", state="waiting") == 1
    assert value("zfarm_queue_depth", queue=queue) == 3 and value("zfarm_queue_depth", queue="zfarm-test-empty") == 0
    assert value("zfarm_broker_up") == 1


def test_metrics_route_serves_prometheus_text_and_needs_an_admin_key(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'z.db'}"
    upgrade(db)
    with TestClient(create_app(FarmSettings(data_dir=tmp_path, database_url=db, auth=True))) as api:
        with api.app.state.sessions() as s:
            _, admin = create_key(s, tenant="ops", is_admin=True)
            _, tenant = create_key(s, tenant="shop")
        anonymous = api.get("/metrics")
        not_admin = api.get("/metrics", headers={"Authorization": f"Bearer {tenant}"})
        scraped = api.get("/metrics", headers={"Authorization": f"Bearer {admin}"})
    assert anonymous.status_code == 401 and not_admin.status_code == 403
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(scraped.text)}
    assert {"zfarm_jobs", "zfarm_queue_depth", "zfarm_workers", "zfarm_job_latency_seconds"} <= names
