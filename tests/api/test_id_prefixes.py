"""Ids by unique prefix (409 when ambiguous), batches by state, and a single job's preset (issue 16, item 2)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.settings import FarmSettings
from models import Batch, Job
from models.base import utcnow


def _api(sessions: sessionmaker[Session], tmp_path: Path, **overrides: object) -> TestClient:
    url = sessions.kw["bind"].url.render_as_string(hide_password=False)
    return TestClient(create_app(FarmSettings(data_dir=tmp_path, database_url=url, **overrides)))


def _job(job_id: str, tenant: str | None = None, status: str = "queued", **values: object) -> Job:
    return Job(
        id=job_id, tenant=tenant, prompt="p", width=256, height=256, steps=2, guidance_scale=0.0, seed=1,
        status=status, attempts=0, cancel_requested=False, created_at=utcnow(), **values,
    )  # fmt: skip


def test_a_unique_prefix_finds_the_job_and_an_ambiguous_one_answers_409(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions() as s:
        s.add_all([_job("abcd1111" + "0" * 24), _job("abcd2222" + "0" * 24), _job("beef3333" + "0" * 24)])
        s.commit()
    with _api(sessions, tmp_path) as api:
        assert api.get("/v1/jobs/beef").json()["id"] == "beef3333" + "0" * 24
        assert api.get("/v1/jobs/ABCD1111").json()["id"] == "abcd1111" + "0" * 24
        ambiguous = api.get("/v1/jobs/abcd")
        assert ambiguous.status_code == 409
        assert "ambiguous" in ambiguous.json()["detail"] and "abcd1111" in ambiguous.json()["detail"]
        assert api.get("/v1/jobs/abc").status_code == 404  # too short to be meant as a prefix
        assert api.get("/v1/jobs/abcd9").status_code == 404
        # cancel, images and the event stream take prefixes too
        assert api.delete("/v1/jobs/beef33").json()["status"] == "canceled"
        assert api.get("/v1/jobs/abcd1111/images/0").status_code == 404  # found; it has no image yet
        assert "has no image 0" in api.get("/v1/jobs/abcd1111/images/0").json()["detail"]


def test_another_tenants_job_is_never_matched_by_prefix(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    from api.keys import create_key

    with sessions() as s:
        s.add_all([_job("cafe" + "1" * 28, tenant="shop"), _job("cafe" + "2" * 28, tenant="other")])
        s.commit()
        _, key = create_key(s, tenant="shop")
    with _api(sessions, tmp_path, auth=True) as api:
        headers = {"Authorization": f"Bearer {key}"}
        assert api.get("/v1/jobs/cafe", headers=headers).json()["id"] == "cafe" + "1" * 28
        assert api.get("/v1/jobs/cafe2", headers=headers).status_code == 404


def test_batches_by_prefix_and_by_state(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    def batch(batch_id: str, **values: object) -> Batch:
        return Batch(id=batch_id, name=batch_id[:4], template="t", key_column="sku", source="json", rows=1, seed=0,
                     created_at=utcnow(), **values)  # fmt: skip

    with sessions() as s:
        s.add_all([batch("aaaa" + "0" * 28), batch("bbbb" + "0" * 28), batch("cccc" + "0" * 28, canceled_at=utcnow())])
        s.flush()
        s.add_all([
            _job("a" * 32, batch_id="aaaa" + "0" * 28, status="running"),
            _job("b" * 32, batch_id="bbbb" + "0" * 28, status="succeeded"),
            _job("c" * 32, batch_id="cccc" + "0" * 28, status="canceled"),
        ])  # fmt: skip
        s.commit()
    with _api(sessions, tmp_path) as api:
        assert api.get("/v1/batches/bbbb").json()["status"] == "succeeded"
        for state, expected in (("active", "aaaa"), ("succeeded", "bbbb"), ("canceled", "cccc")):
            found = [b["name"] for b in api.get("/v1/batches", params={"status": state}).json()["batches"]]
            assert found == [expected], (state, found)
        assert api.get("/v1/batches", params={"status": "failed"}).json()["batches"] == []
        assert api.get("/v1/batches", params={"status": "done"}).status_code == 422


def test_a_job_takes_a_presets_size_and_format_and_its_own_fields_win(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with _api(sessions, tmp_path) as api:
        job = api.post("/v1/jobs", json={"prompt": "a mug", "preset": "thumbnail-512"}).json()
        own = api.post("/v1/jobs", json={"prompt": "a mug", "preset": "thumbnail-512", "width": 256}).json()
        unknown = api.post("/v1/jobs", json={"prompt": "a mug", "preset": "thumbnail512"})
    p = job["parameters"]
    assert (p["width"], p["height"], p["output_format"], p["quality"]) == (512, 512, "webp", 85)
    assert (own["parameters"]["width"], own["parameters"]["height"]) == (256, 512)
    assert unknown.status_code == 422
    [error] = unknown.json()["detail"]
    assert error["field"] == "preset" and error["rule"].endswith("did you mean 'thumbnail-512'?")
