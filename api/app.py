"""The FastAPI app factory. The API never imports torch or worker/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from celery import Celery
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry

from api import openapi
from api.body_limit import BodyLimit
from api.errors import validation_handler
from api.event_polls import EventPolls
from api.metrics import FarmCollector, LeaderCollector
from api.quotas import Quotas
from api.routes import (
    assets,
    batches,
    events,
    health,
    jobs,
    keys,
    loras,
    metrics,
    presets,
    review,
    templates,
    web,
    workers,
)
from api.security_headers import NoSniff
from broker_config.celery_app import app as default_celery
from control.dispatcher import Dispatcher, DispatcherThread
from control.enqueue import Enqueuer
from control.leader import LeaderLease
from control.reconciler import Reconciler, ReconcilerThread
from control.webhook_sweep import WebhookSweep
from core.queues import PRECISIONS
from core.settings import FarmSettings, get_settings
from core.storage_setup import open_storage, presigner
from models import Lane, make_engine, make_session_factory


def create_app(
    settings: FarmSettings | None = None,
    celery: Celery | None = None,
    reconcile_every: float | None = None,
    queue: str | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    celery = celery or default_celery
    # Checked first: a bucket that does not answer stops the API at start (StorageUnavailable names it and why).
    storage = open_storage(settings)
    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    broker = settings
    enqueuer = Enqueuer(celery, sessions, queue or broker.queue, settings.large_pixels)
    redis_url = str(celery.conf.broker_url)
    reconciler = Reconciler(
        sessions,
        enqueuer,
        redis_url,
        offline_after=settings.worker_offline_after_seconds,
        time_limit=broker.job_time_limit_seconds,
        lost_after=settings.reconcile_lost_after_seconds,
    )
    dispatcher = Dispatcher(
        sessions,
        enqueuer,
        redis_url,
        depth=settings.bulk_queue_depth,
        offline_after=settings.worker_offline_after_seconds,
    )
    # One leader per farm runs the loops' rounds, however many replicas run their threads (control/leader.py).
    lease = LeaderLease(
        redis_url,
        queue or broker.queue,
        ttl=settings.leader_lease_seconds,
        renew_every=settings.leader_lease_seconds / 5,
    )
    dispatch_thread = DispatcherThread(dispatcher, every=settings.dispatch_every_seconds, leader=lease.is_leader)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        lease.start()
        every = reconcile_every or settings.reconcile_every_seconds
        thread = ReconcilerThread(reconciler, every=every, leader=lease.is_leader)
        thread.start()
        dispatch_thread.start()
        sweep = WebhookSweep(sessions, celery, broker.webhook_queue, every=every, leader=lease.is_leader)
        sweep.start()
        yield
        thread.stopped.set()
        sweep.stopped.set()
        dispatch_thread.stop()
        dispatch_thread.join(timeout=10)
        lease.stop()  # after the loops: the next replica takes over at its next renewal
        dispatcher.close()
        engine.dispose()

    # FastAPI's own docs page fetches Swagger UI from a CDN (blank offline); this one serves it from the package.
    app = FastAPIOffline(
        title="zfarm",
        version="0.1.0",
        description="A render farm for Z-Image-Turbo: submit jobs, follow them, fetch images and records.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.storage = storage
    app.state.presign = presigner(settings, storage)
    app.state.enqueuer = enqueuer
    app.state.celery = celery
    app.state.reconciler = reconciler
    app.state.dispatcher = dispatcher
    app.state.wake_dispatcher = dispatch_thread.wake
    app.state.leader = lease
    app.state.quotas = Quotas(redis_url, settings)
    app.state.event_polls = EventPolls(events.POLL_SECONDS, settings.max_event_streams_per_tenant)
    app.add_middleware(
        BodyLimit,
        max_json_bytes=settings.max_json_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        # A catalog sent as JSON rows is an upload in all but encoding: it gets the upload limit.
        upload_paths=("/v1/batches",),
        # A LoRA file plus its form fields.
        large_paths={"/v1/loras": settings.max_lora_bytes + 64 * 1024},
        body_timeout=settings.request_body_timeout_seconds,
    )
    app.add_middleware(NoSniff)  # outermost: on every answer, the body limit's 413 included
    app.add_exception_handler(RequestValidationError, validation_handler)
    openapi.install(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(workers.router)
    app.include_router(keys.router)
    app.include_router(batches.router)
    app.include_router(review.router)
    app.include_router(assets.router)
    app.include_router(presets.router)
    app.include_router(templates.router)
    app.include_router(loras.router)
    app.include_router(events.router)
    app.include_router(metrics.router)
    app.include_router(web.router)
    app.mount("/static", web.static_files(), name="static")
    app.state.metrics = CollectorRegistry(auto_describe=False)
    app.state.metrics.register(
        FarmCollector(
            sessions,
            redis_url,
            [
                *(enqueuer.queue_for(lane, p, large) for p in PRECISIONS for large in (False, True) for lane in Lane),
                broker.webhook_queue,
            ],
            settings.worker_offline_after_seconds,
        )
    )
    app.state.metrics.register(LeaderCollector(lease))
    return app
