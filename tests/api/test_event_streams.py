"""Event streams (issue 17, item 5): streams of one job share one database poll, and a tenant holds at most
ZFARM_MAX_EVENT_STREAMS_PER_TENANT of them (429 with Retry-After past it). Real uvicorn, real HTTP streams."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import HTTPException
from sqlalchemy import event

from api.app import create_app
from api.event_polls import EventPolls
from core.settings import FarmSettings, get_settings
from migrations.runner import upgrade
from tests.farm_helpers import serve_http, wait_for

STREAMS = 8


@pytest.fixture
def farm(tmp_path: Path, redis_url: str) -> Iterator[tuple[str, object]]:
    url = f"sqlite:///{tmp_path / 'z.db'}"
    upgrade(url)
    app = create_app(
        FarmSettings(
            data_dir=tmp_path, database_url=url, model="tiny", auth=False, max_event_streams_per_tenant=STREAMS
        )
    )
    with serve_http(app) as base:
        yield base, app
    redis.Redis.from_url(redis_url).delete(get_settings().queue)


def _open_streams(stack: ExitStack, base: str, path: str, count: int) -> list[httpx.Response]:
    client = stack.enter_context(httpx.Client(base_url=base, timeout=30))
    return [stack.enter_context(client.stream("GET", path)) for _ in range(count)]


def test_streams_of_one_job_share_one_database_poll(farm: tuple[str, object]) -> None:
    base, app = farm
    job = httpx.post(f"{base}/v1/jobs", json={"prompt": "a mug"}).json()  # queued: no worker runs here
    reads = []
    engine = app.state.sessions.kw["bind"]  # type: ignore[attr-defined]

    def count(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "FROM jobs" in statement:
            reads.append(time.monotonic())

    def reads_in_3s_with(streams: int) -> int:
        with ExitStack() as stack:
            opened = _open_streams(stack, base, f"/v1/jobs/{job['id']}/events", streams)
            assert all(s.status_code == 200 for s in opened)
            for s in opened:  # every stream has its first event at once
                assert next(s.iter_lines()).startswith(("event: progress", "id:", "data:"))
            reads.clear()
            time.sleep(3.0)
            return len(reads)

    event.listen(engine, "before_cursor_execute", count)
    alone, together = reads_in_3s_with(1), reads_in_3s_with(STREAMS)
    event.remove(engine, "before_cursor_execute", count)
    print(f"job reads in 3 s: {alone} with one stream open, {together} with {STREAMS}")
    # One poll every 0.5 s, however many streams follow it.
    assert together <= alone * 1.5 + 3, f"{together} job reads with {STREAMS} streams, {alone} with one"
    wait_for(lambda: not app.state.event_polls.polls, 10, "the shared poll to stop with its last stream")  # type: ignore[attr-defined]


def test_streams_past_the_tenants_cap_are_refused_with_429(farm: tuple[str, object]) -> None:
    base, app = farm
    job = httpx.post(f"{base}/v1/jobs", json={"prompt": "a mug"}).json()
    path = f"/v1/jobs/{job['id']}/events"
    with ExitStack() as stack:
        streams = _open_streams(stack, base, path, STREAMS)
        assert all(s.status_code == 200 for s in streams)
        refused = httpx.get(base + path)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "ZFARM_MAX_EVENT_STREAMS_PER_TENANT" in refused.json()["detail"]
        assert httpx.get(f"{base}/v1/jobs/{job['id']}").status_code == 200  # plain reads are not capped
    # closed streams give their places back
    wait_for(lambda: app.state.event_polls.open_streams(None) == 0, 10, "streams to be released")  # type: ignore[attr-defined]
    with httpx.Client(base_url=base, timeout=30) as client, client.stream("GET", path) as again:
        assert again.status_code == 200


def test_the_cap_counts_each_tenant_apart() -> None:
    polls = EventPolls(every=0.5, max_streams_per_tenant=2)
    releases = [polls.admit("acme"), polls.admit("acme")]
    polls.admit("globex")  # another tenant is not held back by acme's streams
    with pytest.raises(HTTPException, match="2 event streams open") as refused:
        polls.admit("acme")
    assert refused.value.status_code == 429
    releases[0]()
    releases[0]()  # released twice (stream end and background task): counted once
    polls.admit("acme")
    with pytest.raises(HTTPException, match="event streams open"):
        polls.admit("acme")


def test_a_batch_stream_and_its_job_streams_end_with_final(farm: tuple[str, object]) -> None:
    base, _ = farm
    job = httpx.post(f"{base}/v1/jobs", json={"prompt": "a mug"}).json()
    assert httpx.delete(f"{base}/v1/jobs/{job['id']}").json()["status"] == "canceled"
    results: list[list[str]] = []

    def follow() -> None:
        with httpx.stream("GET", f"{base}/v1/jobs/{job['id']}/events", timeout=30) as response:
            results.append([line for line in response.iter_lines() if line.startswith("event:")])

    threads = [threading.Thread(target=follow) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [["event: final"]] * 3


def test_followers_of_one_key_share_one_read_loop() -> None:
    calls: list[str] = []

    def read_of(key: str):  # type: ignore[no-untyped-def]
        def read() -> tuple[dict[str, object], bool]:
            calls.append(key)
            return {"read": calls.count(key)}, False  # a change on every read

        return read

    async def follow(polls: EventPolls, key: str, seen: list[int]) -> None:
        async for snapshot in polls.follow(key, read_of(key), keepalive=5):
            if snapshot is not None:
                seen.append(snapshot.version)

    async def main() -> list[list[int]]:
        polls = EventPolls(every=0.05, max_streams_per_tenant=100)
        seen: list[list[int]] = [[] for _ in range(11)]
        tasks = [asyncio.create_task(follow(polls, "a" if i < 10 else "b", seen[i])) for i in range(11)]
        await asyncio.sleep(1.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.2)
        assert not polls.polls  # the last follower of each key stopped its poll
        return seen

    seen = asyncio.run(main())
    # ten followers of "a", one of "b": as many reads of each (one loop per key, ~20 in a second)
    a, b = calls.count("a"), calls.count("b")
    assert abs(a - b) <= 2 and 5 <= a <= 25, (a, b)
    for versions in seen[:10]:  # and each follower of "a" got the changes that loop read
        assert len(versions) >= a // 2 and versions == sorted(versions)
