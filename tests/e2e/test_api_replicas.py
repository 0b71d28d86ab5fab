"""Two real `zfarm api` replicas on one PostgreSQL and one Redis: same answers, one leader, takeover on SIGKILL."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis

from control.broker_inspect import _job_id
from migrations.runner import upgrade
from tests.farm_helpers import wait_for
from tests.replica_helpers import LeaderWatch, make_replicas

pytestmark = pytest.mark.e2e
LOST_JOBS = 20


def _messages_per_job(client: redis.Redis, queue: str) -> Counter[str]:
    return Counter(i for i in map(_job_id, cast(list[bytes], client.lrange(queue, 0, -1))) if i)


def test_replicas_share_state_one_leader_resends_a_lost_job_once_and_takes_over(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    # given: two replicas of one farm (no workers: jobs stay queued, so Redis shows every message sent)
    upgrade(postgres_url)
    queue = f"replicas-{uuid.uuid4().hex[:8]}"
    a, b = replicas = make_replicas(postgres_url, redis_url, queue, tmp_path, ZFARM_RECONCILE_LOST_AFTER_SECONDS="1")
    client = redis.Redis.from_url(redis_url)
    try:
        for replica in replicas:
            replica.start()
        watch = LeaderWatch(replicas).start()
        watch.wait_single_leader(10)

        # a job submitted to A is answered by B, the same record
        ids = [
            httpx.post(f"{a.url}/v1/jobs", json={"prompt": f"lost {i}", "width": 256, "height": 256}).json()["id"]
            for i in range(LOST_JOBS)
        ]
        seen_by_b = httpx.get(f"{b.url}/v1/jobs/{ids[0]}").json()
        assert seen_by_b["id"] == ids[0] and seen_by_b["status"] == "queued"
        assert httpx.get(f"{a.url}/v1/jobs/{ids[0]}").json()["parameters"] == seen_by_b["parameters"]
        assert _messages_per_job(client, queue) == Counter({i: 1 for i in ids})

        # when: Redis loses every message (a restart without persistence)
        client.delete(queue)
        # then: the leader's reconciler sends each lost job again, once; the other replica sends none
        wait_for(lambda: set(_messages_per_job(client, queue)) == set(ids), 30, "the lost jobs re-sent")
        for _ in range(20):  # several more rounds of both replicas' loops
            watch.sample()
            time.sleep(0.2)
        assert _messages_per_job(client, queue) == Counter({i: 1 for i in ids})

        # when: the leader dies without a word
        leader = {r.name: r for r in replicas}[watch.wait_single_leader(5)]
        other = b if leader is a else a
        killed_at = time.monotonic()
        leader.kill()
        # then: the other takes the loops over within seconds (lease 2 s, renewed every 0.4 s)
        wait_for(lambda: other.leads(), 10, f"replica {other.name} to take over")
        takeover = time.monotonic() - killed_at
        assert takeover < 6, f"takeover took {takeover:.1f}s"
        assert "became leader" in other.log.read_text()
        metrics = httpx.get(f"{other.url}/metrics").text
        assert 'zfarm_control_leader_changes_total{change="became"} 1.0' in metrics

        # and the restarted replica follows; still one leader at a time
        leader.start()
        for _ in range(15):
            assert watch.sample() == [other.name]
            time.sleep(0.2)
        watch.stop()
        assert not watch.overlaps, f"two leaders at once: {watch.overlaps}"
        assert watch.samples > 30
    finally:
        for replica in replicas:
            replica.stop()
        client.delete(queue)
        client.close()
