"""/metrics exports the real backlog: queued jobs in SQL by lane and capability, and the oldest one's age
(issue 16, bug 5: the Redis depth showed 1 while 35 batch rows waited)."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from core.queues import bulk_queue_name
from core.settings import get_settings
from tests.api.batch_helpers import TEMPLATE, batch_api, rows
from tests.farm_helpers import wait_for


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_backlog_counts_the_queued_jobs_in_sql_not_the_few_ids_in_redis(
    database_url: str, tmp_path: Path, redis_url: str
) -> None:
    with batch_api(database_url, tmp_path, redis_url, dispatch_every_seconds=0.1) as api:
        # given: nothing waits
        empty = _samples(api.get("/metrics").text)
        assert empty[("zfarm_backlog_jobs", (("lane", "bulk"), ("requires", "bf16")))] == 0
        assert empty[("zfarm_backlog_oldest_seconds", (("lane", "bulk"),))] == 0
        # when: a 40-row batch and one single job wait, and no worker runs
        created = api.post("/v1/batches", json={"template": TEMPLATE, "rows": rows(40)})
        assert created.status_code == 202, created.text
        api.post("/v1/jobs", json={"prompt": "a mug", "width": 256, "height": 256})
        bulk = bulk_queue_name(get_settings().queue)
        wait_for(
            lambda: _samples(api.get("/metrics").text)[("zfarm_queue_depth", (("queue", bulk),))] > 0, 10, "dispatch"
        )
        time.sleep(1.1)
        samples = _samples(api.get("/metrics").text)
    # then: Redis holds a few of the batch's ids; the backlog is all forty, and its age shows
    assert 0 < samples[("zfarm_queue_depth", (("queue", bulk),))] <= 2
    assert samples[("zfarm_backlog_jobs", (("lane", "bulk"), ("requires", "bf16")))] == 40
    assert samples[("zfarm_backlog_jobs", (("lane", "interactive"), ("requires", "bf16")))] == 1
    assert 1.0 <= samples[("zfarm_backlog_oldest_seconds", (("lane", "bulk"),))] < 60
    assert 1.0 <= samples[("zfarm_backlog_oldest_seconds", (("lane", "interactive"),))] < 60
