"""LoRA adapters through the API: upload checks (nothing stored when refused), jobs and batches naming them,
what they change in the record and the content hash, deleting, and tenants."""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file
from sqlalchemy import func, select

from api.app import create_app
from api.keys import create_key
from core.settings import FarmSettings, get_settings
from core.storage import lora_key
from migrations.runner import upgrade
from models import Job, Lora, make_engine, make_session_factory
from tests.api.batch_helpers import TEMPLATE, batch_api, rows
from tests.lora_helpers import ATTENTION, foreign_lora, make_tiny_lora


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("loras")
    return {
        "brand": make_tiny_lora(d / "brand.safetensors", seed=1, rank=4, alpha=8),
        "other": make_tiny_lora(d / "other.safetensors", seed=2, rank=8, targets=ATTENTION, style="kohya"),
        "bare": make_tiny_lora(d / "bare.safetensors", seed=3, rank=2, style="peft"),
        "wide": make_tiny_lora(d / "wide.safetensors", seed=4, rank=60),
        "sdxl": foreign_lora(d / "sdxl.safetensors"),
    }


@pytest.fixture
def api(database_url: str, tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    with batch_api(database_url, tmp_path, redis_url) as client:
        yield client


@pytest.fixture
def sqlite_api(tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    """For the refusals: they touch the database only to show that nothing was written."""
    with batch_api(f"sqlite:///{tmp_path / 'zfarm.db'}", tmp_path, redis_url, max_lora_bytes=256 * 1024) as client:
        yield client


def upload(api: TestClient, path: Path, name: str, filename: str | None = None, **form: object) -> object:
    with path.open("rb") as fh:
        return api.post(
            "/v1/loras",
            files={"file": (filename or path.name, fh, "application/octet-stream")},
            data={"name": name, **{k: str(v) for k, v in form.items()}},
        )


def _stored_files(api: TestClient) -> list[Path]:
    root = api.app.state.storage.root / "loras"
    return sorted(root.rglob("*.safetensors")) if root.exists() else []


def _rows(api: TestClient) -> int:
    with api.app.state.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Lora)) or 0)


def test_upload_answers_201_with_rank_alpha_targets_and_stores_the_file_by_sha256(
    api: TestClient, files: dict[str, Path]
) -> None:
    # when
    created = upload(api, files["brand"], "brand-x", trigger_words="brandx style", default_scale=0.7)
    # then
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["rank"], body["alpha"], body["bytes"]) == (
        "brand-x",
        4,
        8.0,
        files["brand"].stat().st_size,
    )
    assert body["trigger_words"] == "brandx style" and body["default_scale"] == 0.7 and body["shared"] is False
    assert "layers.*.attention.to_q" in body["targets"] and "layers.*.feed_forward.w2" in body["targets"]
    assert body["modules"] == 2 * 8 + 8 + 7  # two main blocks and the noise refiner: 8 each; context refiner: 7
    assert api.app.state.storage.path(lora_key(body["sha256"])).read_bytes() == files["brand"].read_bytes()
    assert api.get("/v1/loras/brand-x").json() == body
    assert [item["name"] for item in api.get("/v1/loras").json()["loras"]] == ["brand-x"]
    # a Kohya-format file (lora_unet_ keys, lora_down/lora_up, alpha tensors) is read the same way
    kohya = upload(api, files["other"], "other").json()
    assert (kohya["rank"], kohya["alpha"], kohya["targets"]) == (8, 8.0, sorted(kohya["targets"]))
    assert all(t.split(".")[-1] in ("to_q", "to_k", "to_v", "0") for t in kohya["targets"])


@pytest.mark.parametrize(
    ("filename", "content", "rule"),
    [
        ("brand.bin", b"anything", "pickle formats"),
        ("brand.ckpt", b"anything", "pickle formats"),
        ("brand.safetensors", pickle.dumps({"a": 1}), "is a pickle"),
        ("brand.safetensors", b"PK\x03\x04zip of pickles", "is a pickle"),
        ("brand.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}", "does not parse as a safetensors file"),
        ("brand.safetensors", b"", "does not parse as a safetensors file"),
    ],
)
def test_pickles_and_unparsable_files_are_refused_before_anything_is_stored(
    sqlite_api: TestClient, tmp_path: Path, filename: str, content: bytes, rule: str
) -> None:
    path = tmp_path / "upload"
    path.write_bytes(content)
    refused = upload(sqlite_api, path, "brand-x", filename=filename)
    assert refused.status_code == 422, refused.text
    [problem] = refused.json()["detail"]
    assert problem["field"] == "file" and rule in problem["rule"]
    assert _stored_files(sqlite_api) == [] and _rows(sqlite_api) == 0


def test_an_adapter_for_another_model_is_refused_naming_the_first_key_that_does_not_fit(
    sqlite_api: TestClient, files: dict[str, Path], tmp_path: Path
) -> None:
    refused = upload(sqlite_api, files["sdxl"], "sdxl")
    assert refused.status_code == 422
    [problem] = refused.json()["detail"]
    assert problem["value"] == "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"
    assert "names no linear module of the Z-Image transformer" in problem["rule"]
    # a module of the right name but another model's size (a Z-Image adapter for the full-size model)
    wrong = tmp_path / "wrong.safetensors"
    save_file(
        {
            "layers.0.attention.to_q.lora_A.weight": torch.zeros(4, 3840),
            "layers.0.attention.to_q.lora_B.weight": torch.zeros(3840, 4),
        },
        str(wrong),
    )
    problem = upload(sqlite_api, wrong, "wrong").json()["detail"][0]
    assert (
        problem["value"] == "layers.0.attention.to_q.lora_A.weight" and "must have shape [rank, 32]" in problem["rule"]
    )
    assert _stored_files(sqlite_api) == [] and _rows(sqlite_api) == 0


def test_rank_over_256_a_missing_half_and_a_file_over_the_size_limit_are_refused(
    sqlite_api: TestClient, tmp_path: Path
) -> None:
    deep = tmp_path / "deep.safetensors"
    save_file(
        {
            "layers.0.attention.to_q.lora_A.weight": torch.zeros(257, 32),
            "layers.0.attention.to_q.lora_B.weight": torch.zeros(32, 257),
        },
        str(deep),
    )
    problem = upload(sqlite_api, deep, "deep").json()["detail"][0]
    assert "has rank 257; the farm takes ranks 1 to 256" in problem["rule"]
    half = tmp_path / "half.safetensors"
    save_file({"layers.0.attention.to_q.lora_A.weight": torch.zeros(4, 32)}, str(half))
    problem = upload(sqlite_api, half, "half").json()["detail"][0]
    assert "has no matching lora_B/lora_up tensor" in problem["rule"]
    big = tmp_path / "big.safetensors"  # just over this farm's ZFARM_MAX_LORA_BYTES (256 KiB here): the route counts
    save_file({"layers.0.attention.to_q.lora_A.weight": torch.zeros(2080, 32)}, str(big))
    too_big = upload(sqlite_api, big, "big")
    assert too_big.status_code == 413
    problem = too_big.json()["detail"][0]
    assert problem["field"] == "file" and "over the limit of 262144 bytes" in problem["rule"]
    huge = tmp_path / "huge.safetensors"  # far over: refused by its Content-Length before the body is read
    save_file({"layers.0.attention.to_q.lora_A.weight": torch.zeros(4096, 32)}, str(huge))
    assert upload(sqlite_api, huge, "huge").status_code == 413
    bad_name = upload(sqlite_api, half, "no/slashes")
    assert bad_name.status_code == 422 and bad_name.json()["detail"][0]["field"] == "name"
    assert _stored_files(sqlite_api) == [] and _rows(sqlite_api) == 0


def test_a_job_records_its_adapters_sha256_and_scale_and_they_count_in_the_content_hash(
    api: TestClient, files: dict[str, Path]
) -> None:
    first = upload(api, files["brand"], "brand-x", trigger_words="brandx style", default_scale=0.7).json()
    base = {"prompt": "a ceramic mug", "width": 256, "height": 256, "seed": 5}
    plain = api.post("/v1/jobs", json=base).json()
    styled = api.post("/v1/jobs", json={**base, "loras": [{"name": "brand-x"}]}).json()
    stronger = api.post("/v1/jobs", json={**base, "loras": [{"name": "brand-x", "scale": 0.9}]}).json()
    worded = api.post("/v1/jobs", json={**base, "loras": [{"name": "brand-x"}], "add_trigger_words": True}).json()
    # a new upload under the same name is another style: another hash, and old jobs keep the old file
    second = upload(api, files["bare"], "brand-x").json()
    renamed = api.post("/v1/jobs", json={**base, "loras": [{"name": "brand-x", "scale": 0.7}]}).json()
    assert styled["loras"] == [{"name": "brand-x", "scale": 0.7, "sha256": first["sha256"]}]
    assert styled["parameters"]["loras"] == [{"name": "brand-x", "scale": 0.7}]
    assert renamed["loras"][0]["sha256"] == second["sha256"] != first["sha256"]
    hashes = [j["content_hash"] for j in (plain, styled, stronger, worded, renamed)]
    assert len(set(hashes)) == 5
    assert plain["loras"] == [] and plain["parameters"]["loras"] == []
    with api.app.state.sessions() as s:
        job = s.get(Job, worded["id"])
        assert job is not None and job.add_trigger_words and job.prompt == "a ceramic mug"
        assert job.loras[0]["trigger_words"] == "brandx style"
        assert job.adapters == f"{first['sha256']}@0.7"
    # the replaced file stays in storage while queued jobs render with it
    assert api.app.state.storage.exists(lora_key(first["sha256"]))
    # a file replaced when nothing needs it any more is deleted
    api.delete(f"/v1/jobs/{renamed['id']}")
    upload(api, files["other"], "brand-x")
    assert not api.app.state.storage.exists(lora_key(second["sha256"]))


def test_job_refusals_name_the_field_the_value_and_the_rule(sqlite_api: TestClient, files: dict[str, Path]) -> None:
    upload(sqlite_api, files["brand"], "brand-x")
    base = {"prompt": "a mug", "width": 256, "height": 256}

    def refused(loras: list[dict[str, object]]) -> dict[str, object]:
        answer = sqlite_api.post("/v1/jobs", json={**base, "loras": loras})
        assert answer.status_code == 422, answer.text
        return answer.json()["detail"][0]

    unknown = refused([{"name": "nope"}])
    assert (unknown["field"], unknown["value"]) == ("loras.0.name", "nope") and "brand-x" in unknown["rule"]
    assert refused([{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}])["field"] == "loras"
    assert "at most once" in refused([{"name": "brand-x"}, {"name": "brand-x"}])["rule"]
    assert refused([{"name": "brand-x", "scale": 9}])["field"] == "loras.0.scale"
    assert refused([{"name": "brand-x", "weight": 1}])["field"] == "loras.0.weight"
    with sqlite_api.app.state.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0


def test_adapters_whose_ranks_overflow_the_slot_are_refused_at_submission(
    api: TestClient, files: dict[str, Path]
) -> None:
    upload(api, files["wide"], "wide")  # rank 60; the slot holds 64 by default
    upload(api, files["other"], "other")  # rank 8
    assert api.post("/v1/jobs", json={"prompt": "a", "loras": [{"name": "wide"}]}).status_code == 202
    answer = api.post("/v1/jobs", json={"prompt": "a", "loras": [{"name": "wide"}, {"name": "other"}]})
    assert answer.status_code == 422
    problem = answer.json()["detail"][0]
    assert (
        problem["field"] == "loras"
        and problem["value"] == "wide 60 + other 8"
        and "ZFARM_LORA_SLOT_RANK" in problem["rule"]
    )


def test_delete_is_refused_while_a_queued_job_uses_the_adapter_then_removes_row_and_file(
    api: TestClient, files: dict[str, Path]
) -> None:
    sha = upload(api, files["brand"], "brand-x").json()["sha256"]
    job = api.post("/v1/jobs", json={"prompt": "a", "loras": [{"name": "brand-x"}]}).json()
    busy = api.delete("/v1/loras/brand-x")
    assert busy.status_code == 409 and "1 queued or running job" in busy.json()["detail"]
    api.delete(f"/v1/jobs/{job['id']}")  # canceled: it no longer needs the adapter
    assert api.delete("/v1/loras/brand-x").status_code == 204
    assert api.get("/v1/loras/brand-x").status_code == 404
    assert not api.app.state.storage.exists(lora_key(sha))
    assert api.delete("/v1/loras/brand-x").status_code == 404


def test_a_batch_takes_adapters_in_defaults_and_per_row(api: TestClient, files: dict[str, Path]) -> None:
    brand = upload(api, files["brand"], "brand-x", default_scale=0.6).json()
    other = upload(api, files["other"], "other").json()
    catalog = [
        {"sku": "A", "product": "mug"},
        {"sku": "B", "product": "vase", "lora": "other:0.5"},
        {"sku": "C", "product": "bowl", "lora": "brand-x:0.3, other"},
    ]
    body = {"template": TEMPLATE, "rows": catalog, "defaults": {"loras": [{"name": "brand-x"}]}}
    created = api.post("/v1/batches", json=body)
    assert created.status_code == 202, created.text
    with api.app.state.sessions() as s:
        jobs = {j.item_key: j for j in s.scalars(select(Job).where(Job.batch_id == created.json()["id"]))}
        got = {k: [(x["name"], x["scale"], x["sha256"]) for x in j.loras] for k, j in jobs.items()}
    assert got == {
        "A": [("brand-x", 0.6, brand["sha256"])],
        "B": [("other", 0.5, other["sha256"])],
        "C": [("brand-x", 0.3, brand["sha256"]), ("other", 1.0, other["sha256"])],
    }


def test_batch_refusals_name_the_row_and_the_lora_column(sqlite_api: TestClient, files: dict[str, Path]) -> None:
    upload(sqlite_api, files["brand"], "brand-x")
    catalog = [*rows(1), {**rows(2)[1], "lora": "nope:0.5"}, {"sku": "C", "product": "x", "lora": "brand-x:strong"}]
    answer = sqlite_api.post("/v1/batches", json={"template": TEMPLATE, "rows": catalog})
    assert answer.status_code == 422
    problems = answer.json()["detail"]
    assert [(p["row"], p["column"]) for p in problems] == [(2, "lora"), (3, "lora")]
    assert "no adapter by this name" in problems[0]["rule"] and "name:scale" in problems[1]["rule"]
    in_defaults = sqlite_api.post(
        "/v1/batches", json={"template": TEMPLATE, "rows": rows(1), "defaults": {"loras": [{"name": "gone"}]}}
    )
    assert in_defaults.status_code == 422 and in_defaults.json()["detail"][0]["field"] == "defaults.loras.0.name"


@pytest.fixture
def keyed(tmp_path: Path, redis_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    with sessions() as s:
        keys = {
            t: create_key(s, tenant=t, is_admin=admin)[1]
            for t, admin in (("acme", False), ("globex", False), ("ops", True))
        }
    settings = FarmSettings(data_dir=tmp_path, database_url=url, auth=True, model="tiny")
    with TestClient(create_app(settings)) as client:
        yield client, {t: {"Authorization": f"Bearer {k}"} for t, k in keys.items()}
    redis.Redis.from_url(redis_url).delete(get_settings().queue)


def test_adapters_belong_to_a_tenant_and_an_admin_can_publish_one_to_every_tenant(
    keyed: tuple[TestClient, dict[str, dict[str, str]]], files: dict[str, Path]
) -> None:
    client, h = keyed

    def post(path: Path, name: str, who: str, **form: object) -> object:
        data = {"name": name, **{k: str(v) for k, v in form.items()}}
        return client.post(
            "/v1/loras", files={"file": (path.name, io.BytesIO(path.read_bytes()))}, data=data, headers=h[who]
        )

    assert post(files["brand"], "brand-x", "acme").status_code == 201
    assert client.get("/v1/loras/brand-x", headers=h["globex"]).status_code == 404
    job = client.post("/v1/jobs", json={"prompt": "a", "loras": [{"name": "brand-x"}]}, headers=h["globex"])
    assert job.status_code == 422 and job.json()["detail"][0]["field"] == "loras.0.name"
    assert post(files["other"], "house", "acme", everyone="true").status_code == 403
    shared = post(files["other"], "house", "ops", everyone="true")
    assert shared.status_code == 201 and shared.json()["shared"] is True
    for tenant in ("acme", "globex"):
        names = [item["name"] for item in client.get("/v1/loras", headers=h[tenant]).json()["loras"]]
        assert "house" in names
    assert (
        client.post("/v1/jobs", json={"prompt": "a", "loras": [{"name": "house"}]}, headers=h["globex"]).status_code
        == 202
    )
    assert client.delete("/v1/loras/house", headers=h["globex"]).status_code == 403
    assert client.delete("/v1/loras/brand-x", headers=h["globex"]).status_code == 404
    # the published adapter is in use by globex's queued job: not even an admin deletes it now
    assert client.delete("/v1/loras/house", headers=h["ops"]).status_code == 409
