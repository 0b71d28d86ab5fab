"""A worker child that cannot start says why in one line, stops its worker and never takes a job.

Imported by the worker's parent too (it reads the note the child leaves), so it imports nothing heavy.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import NoReturn

log = logging.getLogger(__name__)

# Set by `zfarm worker` in the parent before the pool child is forked: the child writes its one-line reason
# here, so the parent can repeat it and exit non-zero even when the database could not record it.
failure_note: Path | None = None
# The exit code of `zfarm worker` (and of its pool child) when it could not start: `zfarm up` does not restart it.
START_FAILED_EXIT = 3
# Long enough for the parent to take its cold-shutdown signal before this child's exit is noticed (else the
# pool might fork a replacement that fails the same way), short enough not to hold the shutdown up.
PARENT_SIGNAL_GRACE_SECONDS = 1.0


class StartFailed(RuntimeError):
    """The worker could not start; the message is the one line its row, its log and `zfarm up` show."""


def give_up_start(name: str, exc: BaseException) -> NoReturn:
    """In the pool child: say why in one line, stop the whole worker (cold shutdown) and never take a job.

    Returning would leave Celery's parent feeding jobs to a child without a pipeline. So the child asks the
    parent to stop, then exits: a job already handed to it goes back to the queue unrun (acks_late, and the
    parent restores unacknowledged messages as it shuts down); the parent's pool waits for this exit.
    """
    text = " ".join(str(exc).split())
    reason = (text if isinstance(exc, StartFailed) else f"{type(exc).__name__}: {text}")[:1000]
    log.debug("start-up of %s failed", name, exc_info=exc)  # the full causes, for --loglevel DEBUG
    log.error("worker %s cannot start: %s", name, reason)
    if failure_note is not None:
        failure_note.write_text(reason)
    os.kill(os.getppid(), signal.SIGQUIT)  # Celery's cold shutdown: consumes nothing more
    time.sleep(PARENT_SIGNAL_GRACE_SECONDS)
    os._exit(START_FAILED_EXIT)
