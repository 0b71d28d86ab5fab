"""Start-up of one worker child process: engine, pipeline, warmup, heartbeat. Runs after the fork."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from functools import partial

import torch
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.capability import worker_max_pixels
from core.settings import FarmSettings, get_settings
from core.storage_setup import open_storage
from models import Job, Worker, WorkerState, lifecycle, make_engine, make_session_factory
from models.base import utcnow
from models.db import transaction
from worker.adapters import adapter_library, record_adapters
from worker.finishing import Finisher
from worker.jobs import JobContext
from worker.loading import ModelLoadError
from worker.runtime import Runtime
from worker.start_failure import StartFailed
from worker.webhooks import notify_webhook

log = logging.getLogger(__name__)


def start_worker_process(settings: FarmSettings, name: str) -> JobContext:
    # 1. One engine per process, made here in the child, never inherited across fork.
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    # Unchecked here: `zfarm worker` checked the store before forking, and a store that stops answering later
    # fails the jobs that need it, with the reason.
    storage = open_storage(settings, check=False, outage_seconds=settings.storage_outage_seconds)
    runtime = Runtime(
        model=settings.model,
        revision=settings.model_revision,
        requested_policy=settings.memory_policy,
        requested_device=settings.device,
        models_dir=settings.models_dir,
        vae_tiling_min_pixels=settings.vae_tiling_min_pixels,
        fault_injection=settings.fault_injection,
        compile_mode=settings.compile,
        compile_backend=settings.compile_backend,
        encode_unpadded=settings.encode_unpadded,
        batch_max_images=settings.batch_max_images,
        adapters=adapter_library(settings, storage, partial(record_adapters, sessions, name)),
        precision=settings.precision,
        fuse_mode=settings.fuse,
        compile_cache_dir=settings.compile_cache_dir,
    )
    if settings.fault_injection:
        log.warning("%s: FAULT INJECTION IS ON (ZFARM_FAULT_INJECTION=1): prompt markers can kill this worker", name)
    # A tier this machine cannot run stops here, before the worker row says it runs it (`zfarm worker` checks too).
    runtime.check_precision()
    # `zfarm worker` resolved this from the card's VRAM before the fork and chose its queues by it (core/capability.py).
    register(sessions, name, runtime, max_pixels=worker_max_pixels(settings, None))
    # The beat carries the adapters it holds too: a row update missed at a switch is mended within a beat.
    heartbeat = Heartbeat(
        sessions, name, settings.heartbeat_seconds, extra=runtime.adapters.row if runtime.adapters else None
    )
    heartbeat.start()
    try:
        _load_and_warm(settings, sessions, name, runtime)
    except Exception as exc:
        # A worker that cannot render must not look ready: it says why, in its row, and takes no jobs.
        heartbeat.stopped.set()
        reason = start_failure_reason(exc)
        set_state(sessions, name, WorkerState.FAILED, error=reason)
        raise StartFailed(reason) from exc
    return JobContext(
        name=name,
        runtime=runtime,
        sessions=sessions,
        storage=storage,
        max_attempts=settings.max_attempts,
        offline_after_seconds=settings.worker_offline_after_seconds,
        time_limit_seconds=get_settings().job_time_limit_seconds,
        batch_max_images=settings.batch_max_images,
        batch_max_pixels=settings.batch_max_pixels,
        finisher=Finisher(settings.finish_threads),
        notify=partial(notify_webhook, sessions=sessions),
    )


def _load_and_warm(settings: FarmSettings, sessions: sessionmaker[Session], name: str, runtime: Runtime) -> None:
    # 2. Load the pipeline under the card's memory policy.
    runtime.load()
    set_state(
        sessions,
        name,
        WorkerState.WARMING,
        device=runtime.device,
        gpu_name=runtime.device_name,
        memory_policy=runtime.policy,
        model_id=runtime.source.model_id if runtime.source else None,
        load_seconds=runtime.load_seconds,
    )
    log.info(
        "%s loaded %s on %s (%s, policy %s) in %.1fs",
        name,
        runtime.model,
        runtime.device,
        runtime.device_name,
        runtime.policy,
        runtime.load_seconds,
    )
    if runtime.is_test_model:
        log.warning("%s runs the TINY TEST MODEL: random weights, its images are noise", name)
    # 3. Warm up so the first real job is not slow.
    if settings.warmup:
        runtime.warmup(settings.warmup_size)
    set_state(sessions, name, WorkerState.READY, warmup_seconds=runtime.warmup_seconds)
    log.info("%s ready (warmup %.1fs) zfarm-stats %s", name, runtime.warmup_seconds, json.dumps(_start_stats(runtime)))


def start_failure_reason(exc: BaseException) -> str:
    """One line: a ModelLoadError already says what to do; anything else is named by its type."""
    text = " ".join(str(exc).split())
    reason = text if isinstance(exc, ModelLoadError | StartFailed) else f"{type(exc).__name__}: {text}"
    return reason[:1000]


def _start_stats(runtime: Runtime) -> dict[str, object]:
    return {
        "ready": True,
        "load_s": round(runtime.load_seconds, 3),
        "warmup_s": round(runtime.warmup_seconds, 3),
        "compile_error": runtime.compile_error,
        **runtime.stats(),
    }


def register(sessions: sessionmaker[Session], name: str, runtime: Runtime, max_pixels: int | None = None) -> None:
    with transaction(sessions) as s:
        row = s.get(Worker, name) or Worker(name=name)
        row.hostname, row.pid, row.device = socket.gethostname(), os.getpid(), runtime.requested_device
        row.state, row.current_job_id, row.started_at, row.last_heartbeat = (
            WorkerState.LOADING,
            None,
            utcnow(),
            utcnow(),
        )
        row.model_id, row.memory_policy, row.error = runtime.model, runtime.requested_policy, None
        row.adapters = None  # a new process holds no adapters yet (worker/adapters.py reports what it loads)
        row.precision, row.max_pixels = runtime.precision, max_pixels
        s.add(row)
        # A process that just started runs nothing: jobs still marked running under this name were cut off
        # with the process before it (kill -9 of the whole worker). Back to the queue; the reconciler sends them.
        lifecycle.requeue(s, Job.worker_name == name, error="requeued: its worker restarted")


def set_state(sessions: sessionmaker[Session], name: str, state: WorkerState, **values: object) -> None:
    with transaction(sessions) as s:
        s.execute(update(Worker).where(Worker.name == name).values(state=state, last_heartbeat=utcnow(), **values))


class Heartbeat(threading.Thread):
    """Refreshes the worker row while the process lives; a stale row means the worker is gone."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        name: str,
        every: float,
        extra: Callable[[], dict[str, object]] | None = None,
    ) -> None:
        super().__init__(name=f"heartbeat-{name}", daemon=True)
        self.sessions, self.worker, self.every, self.extra = sessions, name, every, extra
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                values: dict[str, object] = {"last_heartbeat": utcnow(), "pid": os.getpid()}
                if self.extra is not None:
                    values.update(self.extra())
                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    free, total = torch.cuda.mem_get_info()
                    values["gpu_memory_total_mib"] = total // 2**20
                    values["gpu_memory_used_mib"] = (total - free) // 2**20
                with transaction(self.sessions) as s:
                    s.execute(update(Worker).where(Worker.name == self.worker).values(**values))
            except Exception:  # a missed beat is logged; the next one tries again
                log.exception("heartbeat of %s failed", self.worker)
