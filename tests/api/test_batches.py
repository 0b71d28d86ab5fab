"""Accepted batches: seeds, presets, idempotency, dedup of single jobs, manifest escaping, streamed archive, cancel."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.job_identity import derive_seed
from control.dispatcher import take_turns
from core.presets import SHIPPED
from core.queues import bulk_queue_name
from core.settings import get_settings
from core.storage import image_key
from models import Image, Job, JobStatus
from tests.api.batch_helpers import TEMPLATE, batch_api, rows, written_and_queued


@pytest.fixture
def api(database_url: str, tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    with batch_api(database_url, tmp_path, redis_url, bulk_queue_depth=3) as client:
        yield client


def _create(api: TestClient, **body: object) -> dict:
    response = api.post("/v1/batches", json={"template": TEMPLATE, **body})
    assert response.status_code == 202, response.text
    return response.json()


def _jobs(api: TestClient, batch_id: str) -> dict[str, Job]:
    with api.app.state.sessions() as s:
        return {j.item_key: j for j in s.scalars(select(Job).where(Job.batch_id == batch_id))}


def _finish(api: TestClient, job: Job, payload: bytes) -> None:
    """What a worker records for a job that succeeded (the render itself is covered by the e2e tests)."""
    storage = api.app.state.storage
    key = image_key(job.id, 0, job.output_format)
    storage.put(key, payload)
    with api.app.state.sessions() as s:
        s.add(
            Image(
                job_id=job.id,
                index=0,
                seed=job.seed,
                width=job.width,
                height=job.height,
                format=job.output_format,
                sha256=hashlib.sha256(payload).hexdigest(),
                bytes=len(payload),
                storage_key=key,
            )
        )
        s.execute(update(Job).where(Job.id == job.id).values(status=JobStatus.SUCCEEDED, model_id="tiny", attempts=1))
        s.commit()


def test_csv_upload_becomes_one_bulk_job_per_row_in_row_order(api: TestClient) -> None:
    csv_text = "sku,product,width,format\nMUG-1,mug,,\nCUP-2,cup,768,webp\n"
    created = api.post(
        "/v1/batches",
        files={"file": ("catalog.csv", csv_text.encode())},
        data={"template": TEMPLATE, "name": "spring", "defaults": '{"height": 1216}'},
    )
    assert created.status_code == 202, created.text
    body = created.json()
    assert (body["rows"], body["jobs_created"], body["jobs_queued"], body["jobs_reused"]) == (2, 2, 2, 0)
    assert created.headers["location"] == body["url"]
    jobs = _jobs(api, body["id"])
    assert [jobs[k].row_number for k in ("MUG-1", "CUP-2")] == [1, 2]
    assert jobs["MUG-1"].prompt == "studio photo of a mug" and jobs["MUG-1"].lane == "bulk"
    assert (jobs["MUG-1"].width, jobs["MUG-1"].height, jobs["MUG-1"].output_format) == (1024, 1216, "png")
    assert (jobs["CUP-2"].width, jobs["CUP-2"].height, jobs["CUP-2"].output_format) == (768, 1216, "webp")
    status = api.get(body["url"]).json()
    assert status["name"] == "spring" and status["status"] == "active" and status["source"] == "csv"
    assert status["counts"]["queued"] == 2 and status["progress"] == 0.0


def test_seeds_derive_from_batch_seed_and_key_so_added_rows_change_no_other_seed(api: TestClient) -> None:
    first = _jobs(api, _create(api, rows=rows(2), seed=7)["id"])
    # the same catalog with rows added before, between and after, in another order
    bigger = [{"sku": "NEW-0", "product": "x"}, *reversed(rows(2)), {"sku": "NEW-9", "product": "y", "seed": 123}]
    second = _jobs(api, _create(api, rows=bigger, seed=7)["id"])
    other_seed = _jobs(api, _create(api, rows=rows(2), seed=8)["id"])
    for key in ("SKU-001", "SKU-002"):
        assert first[key].seed == second[key].seed == derive_seed(7, key)
        assert other_seed[key].seed != first[key].seed
    assert first["SKU-001"].seed != first["SKU-002"].seed
    assert second["NEW-9"].seed == 123  # an explicit seed column wins


def test_presets_apply_in_order_batch_preset_then_defaults_then_row_preset_then_row_columns(api: TestClient) -> None:
    catalog = [
        {"sku": "A", "product": "mug"},
        {"sku": "B", "product": "mug", "preset": "thumbnail-512"},
        {"sku": "C", "product": "mug", "preset": "thumbnail-512", "width": 768},
    ]
    jobs = _jobs(api, _create(api, rows=catalog, preset="portrait-832", defaults={"steps": 4})["id"])
    assert (jobs["A"].width, jobs["A"].height, jobs["A"].steps, jobs["A"].output_format) == (832, 1216, 4, "png")
    assert (jobs["B"].width, jobs["B"].height, jobs["B"].output_format, jobs["B"].quality) == (512, 512, "webp", 85)
    assert (jobs["C"].width, jobs["C"].height) == (768, 512)


def test_presets_are_listed_with_configured_ones(tmp_path: Path, redis_url: str) -> None:
    custom = {"amazon-main": {"width": 2000, "height": 2000, "output_format": "jpeg", "description": "main image"}}
    with batch_api(f"sqlite:///{tmp_path / 'z.db'}", tmp_path, redis_url, presets=custom) as api:
        listed = {p["name"]: p for p in api.get("/v1/presets").json()["presets"]}
        assert set(SHIPPED) < set(listed)
        assert listed["amazon-main"]["width"] == 2000 and listed["amazon-main"]["shipped"] is False
        assert listed["portrait-832"]["height"] == 1216 and listed["portrait-832"]["shipped"] is True
        jobs = _jobs(api, _create(api, rows=rows(1), preset="amazon-main")["id"])
        assert (jobs["SKU-001"].width, jobs["SKU-001"].output_format) == (2000, "jpeg")


def test_saved_template_from_parts_is_reused_by_name(api: TestClient) -> None:
    parts = {"subject": "a {product}", "action": "on a turntable", "lighting": "soft light", "quality": "8k"}
    saved = api.post("/v1/templates", json={"name": "turntable", "parts": parts, "preset": "square-1024"})
    assert saved.status_code == 201, saved.text
    assert saved.json()["template"] == "a {product}, on a turntable, soft light, 8k"
    assert saved.json()["columns"] == ["product"]
    replaced = api.post("/v1/templates", json={"name": "turntable", "template": "a {product} again"})
    assert replaced.status_code == 200 and [t["name"] for t in api.get("/v1/templates").json()["templates"]] == [
        "turntable"
    ]
    jobs = _jobs(api, api.post("/v1/batches", json={"template_name": "turntable", "rows": rows(1)}).json()["id"])
    assert jobs["SKU-001"].prompt == "a product 1 again"
    bad = api.post("/v1/templates", json={"name": "bad", "template": "{product.name}"})
    assert bad.status_code == 422 and "attribute" in bad.json()["detail"][0]["rule"]
    missing = api.post("/v1/batches", json={"template_name": "nope", "rows": rows(1)})
    assert missing.status_code == 422 and missing.json()["detail"][0]["field"] == "template_name"


def test_idempotency_key_on_batches_returns_the_original(api: TestClient, redis_url: str) -> None:
    body = {"template": TEMPLATE, "rows": rows(3)}
    first = api.post("/v1/batches", json=body, headers={"Idempotency-Key": "spring-drop-1"})
    before = written_and_queued(api, redis_url)[:2]  # (Redis fills from SQL in the background: not compared)
    again = api.post("/v1/batches", json=body, headers={"Idempotency-Key": "spring-drop-1"})
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert written_and_queued(api, redis_url)[:2] == before
    other = api.post("/v1/batches", json={**body, "rows": rows(4)}, headers={"Idempotency-Key": "spring-drop-1"})
    assert other.status_code == 409 and "different batch request" in other.json()["detail"][0]["rule"]


def test_idempotency_key_on_jobs_returns_the_original(api: TestClient, redis_url: str) -> None:
    body = {"prompt": "a brass lamp", "width": 512, "height": 512}
    first = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "lamp-1"})
    queued = redis.Redis.from_url(redis_url).llen(get_settings().queue)
    again = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "lamp-1"})
    assert again.status_code == first.status_code == 202
    assert again.json() == first.json()  # nothing changed in between: the very same record
    assert redis.Redis.from_url(redis_url).llen(get_settings().queue) == queued
    assert api.post("/v1/jobs", json={**body, "width": 768}, headers={"Idempotency-Key": "lamp-1"}).status_code == 409


def test_single_job_with_the_content_of_a_succeeded_job_reuses_its_images(api: TestClient, redis_url: str) -> None:
    body = {"prompt": "a linen shirt", "width": 512, "height": 512, "seed": 7}
    original = api.post("/v1/jobs", json=body).json()
    with api.app.state.sessions() as s:
        _finish(api, s.get(Job, original["id"]), b"fake image bytes")
    queue = get_settings().queue
    queued = redis.Redis.from_url(redis_url).llen(queue)
    # when
    reused = api.post("/v1/jobs", json=body).json()
    forced = api.post("/v1/jobs", json={**body, "dedup": False}).json()
    other_seed = api.post("/v1/jobs", json={**body, "seed": 8}).json()
    # then
    assert reused["status"] == "succeeded" and reused["reused_from"] == original["id"]
    assert reused["gpu_seconds"] == 0.0 and reused["content_hash"] == original["content_hash"]
    assert api.get(reused["images"][0]["url"]).content == b"fake image bytes"
    assert forced["status"] == other_seed["status"] == "queued" and forced["reused_from"] is None
    assert redis.Redis.from_url(redis_url).llen(queue) == queued + 2  # the reused job sent nothing


def test_manifest_escapes_cells_that_spreadsheets_would_run_as_formulas(api: TestClient) -> None:
    catalog = [
        {"sku": "=HYPERLINK(1)", "product": "mug"},
        {"sku": "+A1", "product": "cup"},
        {"sku": "-2", "product": "jar"},
        {"sku": "@SUM", "product": "vase"},
        {"sku": "plain", "product": "bowl"},
    ]
    batch = _create(api, rows=catalog, template="{product}", defaults={"negative_prompt": "=cmd|' /C calc'!A0"})
    response = api.get(batch["manifest_url"])
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(response.text)))
    assert [line["key"] for line in lines] == ["'=HYPERLINK(1)", "'+A1", "'-2", "'@SUM", "plain"]
    assert {line["negative_prompt"] for line in lines} == {"'=cmd|' /C calc'!A0"}
    assert all(line["status"] == "queued" and line["file"] == "" for line in lines)


def test_archive_is_streamed_with_every_image_named_by_key(api: TestClient) -> None:
    # given: 300 succeeded jobs with small fake image files (the bytes are not images: only the zip is tested)
    batch = _create(api, rows=rows(300))
    jobs = _jobs(api, batch["id"])
    payloads = {key: os.urandom(2000) for key in jobs}
    for key, job in jobs.items():
        _finish(api, job, payloads[key])
    # when
    chunks = 0
    buf = io.BytesIO()
    with api.stream("GET", batch["archive_url"]) as response:
        assert response.status_code == 200 and "content-length" not in response.headers
        for chunk in response.iter_bytes():
            chunks += 1
            buf.write(chunk)
    # then
    assert chunks > 3  # sent as it was made, not as one finished body
    with zipfile.ZipFile(buf) as zf:
        assert zf.testzip() is None
        assert set(zf.namelist()) == {f"{k}.png" for k in jobs} | {"manifest.csv"}
        assert all(zf.read(f"{k}.png") == payloads[k] for k in jobs)
        lines = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))
    assert len(lines) == 300 and {line["file"] for line in lines} == {f"{k}.png" for k in jobs}
    status = api.get(batch["url"]).json()
    assert status["status"] == "succeeded" and status["images_done"] == 300 and status["progress"] == 1.0


def test_bulk_jobs_wait_in_sql_and_only_a_few_ids_go_to_redis(api: TestClient, redis_url: str) -> None:
    batch = _create(api, rows=rows(50))
    bulk = bulk_queue_name(get_settings().queue)
    r = redis.Redis.from_url(redis_url)
    from tests.farm_helpers import wait_for

    wait_for(lambda: r.llen(bulk) == 3, 10, "the dispatcher to fill the bulk queue")
    api.app.state.dispatcher.top_up()
    assert r.llen(bulk) == 3  # the depth: the other 47 wait in SQL
    assert r.llen(get_settings().queue) == 0
    assert api.get(batch["url"]).json()["counts"]["queued"] == 50


def test_batches_take_turns_one_job_each() -> None:
    picks, served = take_turns(["b", "a"], {"a": ["a1", "a2", "a3"], "b": ["b1"]}, 5)
    assert picks == ["b1", "a1", "a2", "a3"] and served == ["b", "a", "a", "a"]
    assert take_turns(["a", "b"], {"a": ["a1", "a2"], "b": ["b1", "b2"]}, 3)[0] == ["a1", "b1", "a2"]


def test_tenants_take_turns_before_their_batches_do() -> None:
    # given: tenant t1 has three batches, t2 one; t2's batch was served most recently of all
    order = ["x", "y", "z", "b"]
    heads = {"x": ["x1", "x2"], "y": ["y1", "y2"], "z": ["z1"], "b": ["b1", "b2", "b3", "b4"]}
    tenants = {"x": "t1", "y": "t1", "z": "t1", "b": "t2"}
    # when
    picks, served = take_turns(order, heads, 8, tenants)
    # then: t1 and t2 alternate (t1 first: its latest turn, z, is older than b's); t1's batches rotate
    assert picks == ["x1", "b1", "y1", "b2", "z1", "b3", "x2", "b4"]
    assert served == ["x", "b", "y", "b", "z", "b", "x", "b"]
    # a tenant whose batches were all never served goes before both
    fresh = take_turns(["n", *order], {**heads, "n": ["n1"]}, 3, {**tenants, "n": "t3"})[0]
    assert fresh == ["n1", "x1", "b1"]


def test_cancel_stops_what_has_not_run_and_retry_leaves_canceled_jobs(api: TestClient) -> None:
    batch = _create(api, rows=rows(3))
    jobs = _jobs(api, batch["id"])
    with api.app.state.sessions() as s:
        s.execute(update(Job).where(Job.id == jobs["SKU-001"].id).values(status=JobStatus.RUNNING))
        s.commit()
    canceled = api.delete(batch["url"])
    assert canceled.status_code == 200
    assert canceled.json()["counts"] == {**canceled.json()["counts"], "canceled": 2, "running": 1, "queued": 0}
    assert api.post(f"{batch['url']}/retry-failed").json()["requeued"] == 0
    assert api.get(f"/v1/batches/{'0' * 32}").status_code == 404


def test_tenants_see_only_their_own_batches_templates_and_reuse(tmp_path: Path, redis_url: str) -> None:
    from api.keys import create_key

    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    with batch_api(url, tmp_path, redis_url, auth=True) as api:
        with api.app.state.sessions() as s:
            acme, globex = ({"Authorization": f"Bearer {create_key(s, tenant=t)[1]}"} for t in ("acme", "globex"))
        body = {"template": TEMPLATE, "rows": rows(1)}
        mine = api.post("/v1/batches", json=body, headers={**acme, "Idempotency-Key": "k"}).json()
        assert api.post("/v1/batches", json=body).status_code == 401
        assert api.get(mine["url"], headers=acme).status_code == 200
        for path in ("", "/manifest.csv", "/archive.zip"):
            assert api.get(mine["url"] + path, headers=globex).status_code == 404
        assert api.post(mine["url"] + "/retry-failed", headers=globex).status_code == 404
        assert api.delete(mine["url"], headers=globex).status_code == 404
        assert api.get("/v1/batches", headers=globex).json()["batches"] == []
        # the same Idempotency-Key from another tenant is another request
        theirs = api.post("/v1/batches", json=body, headers={**globex, "Idempotency-Key": "k"}).json()
        assert theirs["id"] != mine["id"]
        # a finished job of one tenant is never reused for another
        job = _jobs(api, mine["id"])["SKU-001"]
        _finish(api, job, b"acme's image")
        again = api.post("/v1/batches", json=body, headers=globex).json()
        assert again["jobs_reused"] == 0
        assert api.post("/v1/batches", json=body, headers=acme).json()["jobs_reused"] == 1
        api.post("/v1/templates", json={"name": "t", "template": "{product}"}, headers=acme)
        assert api.get("/v1/templates", headers=globex).json()["templates"] == []


def test_the_dispatcher_shares_the_bulk_queue_between_tenants_not_batches(tmp_path: Path, redis_url: str) -> None:
    from api.keys import create_key
    from control.broker_inspect import _job_id
    from control.dispatcher import Dispatcher
    from tests.farm_helpers import wait_for

    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    # given: the API's own dispatcher keeps one id in Redis; nothing consumes it
    with batch_api(url, tmp_path, redis_url, auth=True, bulk_queue_depth=1) as api:
        with api.app.state.sessions() as s:
            acme, globex = ({"Authorization": f"Bearer {create_key(s, tenant=t)[1]}"} for t in ("acme", "globex"))
        for n in range(3):  # acme: three batches of four rows
            rows_n = [{"sku": f"A{n}-{i}", "product": "mug"} for i in range(4)]
            api.post("/v1/batches", json={"template": TEMPLATE, "rows": rows_n}, headers=acme)
        api.post("/v1/batches", json={"template": TEMPLATE, "rows": rows(4)}, headers=globex)
        bulk = bulk_queue_name(get_settings().queue)
        r = redis.Redis.from_url(redis_url)
        wait_for(lambda: r.llen(bulk) == 1, 10, "the first id (acme's first batch)")
        # when: rounds fill eight more places (a round yields to the API's own if that holds the lock)
        state = api.app.state
        dispatcher = Dispatcher(state.sessions, state.enqueuer, redis_url, depth=9)
        wait_for(lambda: dispatcher.top_up() == 8, 10, "one round of eight")
        # then: the round alternated tenants although acme has three batches waiting and globex one:
        # four for each, plus acme's first id (batch round-robin would have given acme 6 of the 8)
        sent = [_job_id(m) for m in r.lrange(bulk, 0, -1)]
        with state.sessions() as s:
            tenants = dict(s.execute(select(Job.id, Job.tenant).where(Job.id.in_(sent))).all())
        assert len(sent) == 9 and sorted(tenants.values()) == ["acme"] * 5 + ["globex"] * 4
