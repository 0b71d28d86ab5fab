"""The bulk lane keeps a real `zfarm worker` busy: batch ids are sent as the worker takes them, not on a timer.

The dispatcher's timer is set to a minute here. Topped up on the timer alone (two ids per live worker per tick),
a batch of N rows on one worker waits about a minute after every second row; sent on demand, the worker goes
from one row to the next without waiting, however fast or slow its renders are (this machine may be loaded).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import select

from api.keys import create_key
from models import Job, Lane
from tests.farm_helpers import LiveFarm, job_status, live_farm, wait_for

pytestmark = pytest.mark.e2e
SMALL = {"width": 256, "height": 256, "steps": 2}
TIMER = 60.0


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFarm]:
    data = tmp_path_factory.mktemp("on-demand-farm")
    url = f"sqlite:///{data / 'zfarm.db'}"
    overrides = {"model": "tiny", "auth": True, "dispatch_every_seconds": TIMER}  # depth: two per live worker
    with live_farm(url, data, settings_overrides=overrides) as live:
        yield live


def _key(farm: LiveFarm, tenant: str) -> dict[str, str]:
    with farm.sessions() as s:
        return {"Authorization": f"Bearer {create_key(s, tenant=tenant)[1]}"}


def _batch(farm: LiveFarm, headers: dict[str, str], keys: list[str]) -> str:
    rows = [{"sku": k, "product": f"mug {k}"} for k in keys]
    body = {"template": "studio photo of a {product}", "rows": rows, "defaults": SMALL}
    created = farm.api.post("/v1/batches", json=body, headers=headers)
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


def _wait_batch(farm: LiveFarm, headers: dict[str, str], batch_id: str, timeout: float) -> dict:
    def done() -> bool:
        return farm.api.get(f"/v1/batches/{batch_id}", headers=headers).json()["status"] != "active"

    wait_for(done, timeout, f"batch {batch_id}")
    return farm.api.get(f"/v1/batches/{batch_id}", headers=headers).json()


def test_a_batch_on_one_worker_runs_row_after_row_without_waiting_for_the_timer(farm: LiveFarm) -> None:
    acme = _key(farm, "acme")
    rows = 5
    # when
    batch_id = _batch(farm, acme, [f"S{i}" for i in range(rows)])
    done = _wait_batch(farm, acme, batch_id, timeout=4 * TIMER)
    # then: each row started as soon as the one before it was recorded (the timer alone: ~a minute after every
    # second row)
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == rows
    with farm.sessions() as s:
        spans = s.execute(
            select(Job.started_at, Job.finished_at).where(Job.batch_id == batch_id).order_by(Job.started_at)
        ).all()
    gaps = [(nxt.started_at - prev.finished_at).total_seconds() for prev, nxt in zip(spans, spans[1:], strict=False)]
    assert len(gaps) == rows - 1 and max(gaps) < 5.0, f"the worker waited for bulk ids: gaps {gaps} s"


def test_tenants_still_take_turns_when_ids_are_sent_on_demand(farm: LiveFarm, redis_url: str) -> None:
    acme, globex = _key(farm, "acme"), _key(farm, "globex")
    r = redis.Redis.from_url(redis_url)
    bulk = farm.api.app.state.enqueuer.queues[Lane.BULK]
    # given: the worker busy with a slow job; acme's first batch fills the queue (two of its three ids) before the
    # other batches exist
    blocker = farm.api.post(
        "/v1/jobs", json={"prompt": "slow blocker", "width": 512, "height": 512, "steps": 6}, headers=acme
    ).json()["id"]
    wait_for(lambda: job_status(farm.sessions, blocker) == "running", 30, "the blocker to start")
    acme_batches = [_batch(farm, acme, ["A0-0", "A0-1", "A0-2"])]
    wait_for(lambda: r.llen(bulk) == 2, 5, "acme's first two ids in the bulk queue")
    # when: acme adds two more batches, globex one; then the worker takes ids one by one as it finishes jobs
    acme_batches += [_batch(farm, acme, [f"A{n}-0", f"A{n}-1"]) for n in (1, 2)]
    theirs = _batch(farm, globex, ["G-0", "G-1", "G-2"])
    assert job_status(farm.sessions, blocker) == "running", "the blocker ended too soon: the order proves nothing"
    for batch_id in acme_batches:
        _wait_batch(farm, acme, batch_id, timeout=4 * TIMER)
    _wait_batch(farm, globex, theirs, timeout=4 * TIMER)
    # then: after acme's two ids that were waiting, the tenants alternate until globex has no rows left, although
    # acme has three batches to globex's one (turns between batches would have sent acme's two other batches first)
    with farm.sessions() as s:
        tenants = list(
            s.scalars(select(Job.tenant).where(Job.batch_id.in_([*acme_batches, theirs])).order_by(Job.started_at))
        )
    assert tenants == ["acme", "acme"] + ["globex", "acme"] * 3 + ["acme", "acme"], tenants
