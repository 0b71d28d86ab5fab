"""Event streams share their reads: one database poll per followed job or batch, however many streams follow it,
and a cap on the streams a tenant may hold open.

Before, every open stream read the database every half second on its own: a hundred browser tabs on one
batch were two hundred queries a second. Now the first stream of a job (or batch) starts its poll, later
ones wait on the same snapshots, and the poll stops with its last follower or after the final state.
The cap is per API process (each replica counts its own streams); past it a stream is refused with 429 and
Retry-After, and the client falls back to polling GET.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from fastapi.concurrency import run_in_threadpool

Read = Callable[[], tuple[dict[str, Any], bool]]  # (snapshot, final); runs in a worker thread
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Snapshot:
    version: int
    text: str  # the snapshot as compact JSON: what streams send, and what tells a change
    final: bool


class SharedPoll:
    def __init__(self, read: Read, every: float) -> None:
        self.read, self.every = read, every
        self.latest: Snapshot | None = None
        self.followers = 0
        self.reads = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    @property
    def ended(self) -> bool:
        return self._task is not None and self._task.done()

    async def _run(self) -> None:
        version = 0
        try:
            while True:
                data, final = await run_in_threadpool(self.read)
                self.reads += 1
                text = json.dumps(data, separators=(",", ":"))
                if self.latest is None or text != self.latest.text or final:
                    version += 1
                    self.latest = Snapshot(version, text, final)
                    self._changed.set()
                    self._changed = asyncio.Event()  # followers that saw this one wait on the next
                if final:
                    return
                await asyncio.sleep(self.every)
        finally:
            self._changed.set()  # wake followers: they see the end (or the poll's error) themselves

    async def snapshots(self, keepalive: float) -> AsyncIterator[Snapshot | None]:
        """Each new snapshot (None after `keepalive` seconds without one), up to and including the final one."""
        seen = 0
        while True:
            latest, changed = self.latest, self._changed
            if latest is not None and latest.version > seen:
                seen = latest.version
                yield latest
                if latest.final:
                    return
                continue
            if self._task is not None and self._task.done():
                self._task.result()  # re-raises a failed read in the stream that waits on it
                return
            try:
                await asyncio.wait_for(changed.wait(), keepalive)
            except TimeoutError:
                yield None


class EventPolls:
    def __init__(self, every: float, max_streams_per_tenant: int) -> None:
        self.every, self.cap = every, max_streams_per_tenant
        self.polls: dict[Hashable, SharedPoll] = {}  # touched on the event loop only
        self._open: Counter[str | None] = Counter()  # touched from route threads too
        self._lock = threading.Lock()

    def admit(self, tenant: str | None) -> Callable[[], None]:
        """Counts a stream for the tenant, or raises 429; returns the (idempotent) release."""
        with self._lock:
            if self._open[tenant] >= self.cap:
                raise HTTPException(
                    429,
                    detail=f"this tenant has {self._open[tenant]} event streams open, the most allowed "
                    f"(ZFARM_MAX_EVENT_STREAMS_PER_TENANT={self.cap}); close one or poll GET instead",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            self._open[tenant] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self._open[tenant] -= 1

        return release

    def open_streams(self, tenant: str | None) -> int:
        with self._lock:
            return self._open[tenant]

    async def follow(self, key: Hashable, read: Read, keepalive: float) -> AsyncIterator[Snapshot | None]:
        poll = self.polls.get(key)
        if poll is None or poll.ended:
            poll = self.polls[key] = SharedPoll(read, self.every)
            poll.start()
        poll.followers += 1
        try:
            async for snapshot in poll.snapshots(keepalive):
                yield snapshot
        finally:
            poll.followers -= 1
            if poll.followers == 0:
                poll.stop()
                if self.polls.get(key) is poll:
                    del self.polls[key]
