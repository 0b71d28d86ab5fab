"""A few threads that finish jobs (PNG encoding, storage writes, database updates) while the GPU renders the next.

The Celery task returns, and its message is acknowledged, once the images are rendered; encoding and storing a
1024x1024 image takes 0.05-0.2 s of CPU (0.21-0.24 s for the benchmark's noise images on an H200 host) that would
otherwise leave the GPU idle. A job whose worker dies before its images are stored is left `running`; it is
requeued by the restarted worker (`worker/process.py: register`) or by the API's reconciler once the heartbeat
stops (`Reconciler.requeue_orphaned`): the SQL row, not the message, carries the at-least-once guarantee.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

log = logging.getLogger(__name__)


class Finisher:
    def __init__(self, threads: int, max_pending: int = 16) -> None:
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="finish") if threads > 0 else None
        # Back-pressure: past this many unfinished jobs the renderer waits, so decoded images never pile up.
        self.slots = threading.BoundedSemaphore(max_pending)
        self.pending: set[Future[None]] = set()
        self.lock = threading.Lock()  # `pending` shrinks on pool threads while the renderer reads it

    def submit(self, fn: Callable[[], None]) -> None:
        if self.pool is None:
            fn()
            return
        self.slots.acquire()
        try:
            future = self.pool.submit(self._run, fn)
        except RuntimeError:  # shut down: finish here rather than drop the job
            self.slots.release()
            fn()
            return
        with self.lock:
            self.pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self.lock:
            self.pending.discard(future)

    def wait_idle(self) -> None:
        """Waits for what was submitted so far (before a job that may crash the process: see run_job)."""
        with self.lock:
            pending = list(self.pending)
        wait(pending)

    def _run(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # the callable records its own failures; this only keeps the pool alive
            log.exception("finishing a job failed")
        finally:
            self.slots.release()

    def drain(self) -> None:
        """Waits for every submitted job to be stored and recorded (worker shutdown)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
