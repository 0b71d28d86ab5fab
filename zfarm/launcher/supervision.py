"""What `zfarm up` does when a child dies or a stop is asked for: restarts within a budget, warm then cold stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import click

# A child that dies more often than this is broken, not unlucky: the farm stops rather than flap forever.
RESTART_LIMIT = 5
RESTART_WINDOW_SECONDS = 600.0
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
# After a second Ctrl-C: how long Celery's cold shutdown (it puts the running job back in the queue) may take.
COLD_STOP_SECONDS = 10.0
# Redis stops last, once nothing uses it: its final append-only write takes a moment.
REDIS_STOP_SECONDS = 10.0
# The API, Flower: no job to finish.
SERVICE_STOP_SECONDS = 10.0


@dataclass
class RestartBudget:
    """At most `limit` restarts in any `window` seconds, each after a back-off that doubles (1, 2, 4 ... s)."""

    limit: int = RESTART_LIMIT
    window: float = RESTART_WINDOW_SECONDS
    first_backoff: float = FIRST_BACKOFF_SECONDS
    max_backoff: float = MAX_BACKOFF_SECONDS
    restarts: deque[float] = field(default_factory=deque)

    def take(self, now: float) -> float | None:
        """Seconds to wait before the next restart, or None when the budget is spent."""
        while self.restarts and now - self.restarts[0] > self.window:
            self.restarts.popleft()
        if len(self.restarts) >= self.limit:
            return None
        self.restarts.append(now)
        return min(self.max_backoff, self.first_backoff * 2 ** (len(self.restarts) - 1))

    @property
    def used(self) -> int:
        return len(self.restarts)


@dataclass
class StopSignals:
    """SIGINT/SIGTERM received by `zfarm up`: the first asks for a warm stop, a second one for a cold stop."""

    count: int = 0
    cold_started: bool = False  # the workers were told to stop cold (once, and said once)

    @property
    def requested(self) -> bool:
        return self.count > 0

    @property
    def cold(self) -> bool:
        return self.count > 1

    def install(self) -> None:
        def _count(_sig: int, _frame: object) -> None:
            self.count += 1  # only counted here: the supervisor's loop says what it does about it

        signal.signal(signal.SIGINT, _count)
        signal.signal(signal.SIGTERM, _count)


def describe_exit(code: int) -> str:
    """`exited with code 1`, or `was killed by SIGKILL` (Popen reports a signal as its negative number)."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass(eq=False)  # compared and hashed by identity: one per process slot
class Child:
    """One process `zfarm up` started, in a session of its own: a terminal's Ctrl-C reaches only `zfarm up`,
    which stops each child's main process in order (signalling a Celery worker's whole group would kill the
    pool child mid-render)."""

    name: str
    proc: subprocess.Popen[bytes]
    spawn: Callable[[], subprocess.Popen[bytes]]  # starts it again, as it was started
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    budget: RestartBudget = field(default_factory=RestartBudget)
    restart_at: float | None = None  # set while it waits out its back-off
    given_up: bool = False  # a worker that could not start: never restarted

    @property
    def is_worker(self) -> bool:
        return "@" in self.name

    @property
    def essential(self) -> bool:
        """Flower only watches: the farm renders on without it once it is given up on."""
        return self.name != "flower"

    @property
    def is_celery(self) -> bool:
        return self.is_worker or self.name == "webhooks"

    @property
    def running(self) -> bool:
        return self.restart_at is None and not self.given_up

    def restart(self) -> None:
        self.proc = self.spawn()
        self.started_at = datetime.now(UTC)
        self.restart_at = None

    def kill_leftovers(self) -> None:
        """SIGKILL to its process group: what outlived its main process (a pool child whose parent was killed)."""
        signal_group(self.proc, signal.SIGKILL)


def stop_children(children: list[Child], signals: StopSignals, timeout: float) -> None:
    """1. Warm: SIGTERM to every main process but Redis' (a Celery worker finishes its running job first, the
    API and Flower close); a worker may take `timeout`, the others SERVICE_STOP_SECONDS; a second stop signal
    makes it cold. 2. Redis, once nothing uses it. 3. SIGKILL to every group, for anything left."""
    others = [c for c in children if c.name != "redis"]
    for child in others:
        _send(child.proc, signal.SIGTERM)
    if any(c.is_celery and c.proc.poll() is None for c in others):
        click.echo(
            f"zfarm: warm stop: running jobs finish first (up to {timeout:g} s, ZFARM_STOP_TIMEOUT_SECONDS); "
            "Ctrl-C again for a cold stop",
            err=True,
        )
    now = time.monotonic()
    # An open event stream can hold the API's graceful shutdown for as long as the browser keeps it open.
    _wait_for_exit({c: now + (timeout if c.is_celery else min(timeout, SERVICE_STOP_SECONDS)) for c in others}, signals)
    for child in children:
        if child.name == "redis":
            _send(child.proc, signal.SIGTERM)
            _wait_for_exit({child: time.monotonic() + REDIS_STOP_SECONDS}, signals)
    for child in children:
        child.kill_leftovers()
        child.proc.wait()


def _wait_for_exit(deadlines: dict[Child, float], signals: StopSignals) -> None:
    """Waits for each child until its deadline, then kills its group; on a second stop signal the deadlines
    shrink to COLD_STOP_SECONDS and the Celery workers are told to stop cold."""
    while alive := [c for c in deadlines if c.proc.poll() is None]:
        if signals.cold and not signals.cold_started:
            signals.cold_started = True
            click.echo("zfarm: cold stop: running jobs are cut off and run again at the next start", err=True)
            for child in alive:
                # Celery's cold shutdown puts the message of the running job back in the queue; others just end.
                _send(child.proc, signal.SIGQUIT if child.is_celery else signal.SIGTERM)
                deadlines[child] = min(deadlines[child], time.monotonic() + COLD_STOP_SECONDS)
        for child in alive:
            if time.monotonic() >= deadlines[child]:
                click.echo(f"zfarm: {child.name} did not stop in time; killing it", err=True)
                child.kill_leftovers()
                child.proc.wait()
        time.sleep(0.1)


def _send(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)  # the main process only; a no-op once it has exited


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
