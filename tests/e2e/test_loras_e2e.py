"""LoRA adapters through the whole farm: upload over HTTP, jobs through Redis to a real `zfarm worker` process
running the tiny pipeline, which fetches the file from storage and renders with it. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.farm_helpers import LiveFarm, live_farm, wait_for
from tests.lora_helpers import ATTENTION, make_tiny_lora

pytestmark = pytest.mark.e2e
BASE = {"prompt": "studio photo of a ceramic mug", "width": 256, "height": 256, "steps": 3, "seed": 11}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def farm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFarm]:
    data = tmp_path_factory.mktemp(f"loras-{request.param}")
    url = f"sqlite:///{data / 'zfarm.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    with live_farm(url, data, settings_overrides={"model": "tiny"}) as live:
        yield live


def _upload(farm: LiveFarm, path: Path, name: str, **form: str) -> dict:
    with path.open("rb") as fh:
        answer = farm.api.post("/v1/loras", files={"file": (path.name, fh)}, data={"name": name, **form})
    assert answer.status_code == 201, answer.text
    return answer.json()


def _image(farm: LiveFarm, **body: object) -> tuple[str, dict]:
    """Runs a job (never reusing another's images); returns its pixels' sha256 and the job. The pixels, not the
    file: the PNG's parameters chunk names the adapters, so a styled job's file differs even at scale 0."""
    job = farm.wait_job(farm.submit(**{**BASE, "dedup": False, **body}))
    assert job["status"] == "succeeded", job
    return _pixels(farm, job["id"]), job


def _pixels(farm: LiveFarm, job_id: str) -> str:
    png = Image.open(io.BytesIO(farm.api.get(f"/v1/jobs/{job_id}/images/0").content))
    return hashlib.sha256(png.convert("RGB").tobytes()).hexdigest()


def test_a_worker_renders_with_and_without_adapters_and_never_leaks_one_into_another_job(
    farm: LiveFarm, tmp_path: Path
) -> None:
    # given: the first job on a freshly started worker is the base model's image
    fresh_base, _ = _image(farm)
    brand = _upload(farm, make_tiny_lora(tmp_path / "brand.safetensors", seed=1), "brand-x", trigger_words="brandx")
    other = _upload(farm, make_tiny_lora(tmp_path / "o.safetensors", seed=2, targets=ATTENTION, style="kohya"), "other")
    # when / then: scale 0 is the base model
    assert _image(farm, loras=[{"name": "brand-x", "scale": 0.0}])[0] == fresh_base
    # an adapter changes the image, the same way on a rerun, and is recorded with its file's sha256 and scale
    styled, job = _image(farm, loras=[{"name": "brand-x", "scale": 0.8}])
    assert styled != fresh_base
    assert job["loras"] == [{"name": "brand-x", "scale": 0.8, "sha256": brand["sha256"]}]
    assert _image(farm, loras=[{"name": "brand-x", "scale": 0.8}])[0] == styled
    png = Image.open(io.BytesIO(farm.api.get(f"/v1/jobs/{job['id']}/images/0").content))
    assert json.loads(png.text["parameters"])["loras"] == [{"name": "brand-x", "sha256": brand["sha256"], "scale": 0.8}]
    # the next job without adapters is the fresh worker's image: nothing of the adapter is left
    assert _image(farm)[0] == fresh_base
    # swapping between two adapters: each job gets its own image back
    other_image, _ = _image(farm, loras=[{"name": "other", "scale": 1.2}])
    assert other_image not in (styled, fresh_base)
    assert _image(farm, loras=[{"name": "brand-x", "scale": 0.8}])[0] == styled
    assert _image(farm, loras=[{"name": "other", "scale": 1.2}])[0] == other_image
    assert _image(farm)[0] == fresh_base
    # trigger words lead the prompt the encoder read (the PNG says so), and change the image
    worded, job = _image(farm, loras=[{"name": "brand-x", "scale": 0.8}], add_trigger_words=True)
    assert worded != styled
    png = Image.open(io.BytesIO(farm.api.get(f"/v1/jobs/{job['id']}/images/0").content))
    assert json.loads(png.text["parameters"])["prompt"] == "brandx, " + BASE["prompt"]
    # the worker shows what it holds
    # this farm's worker: the PostgreSQL database of a test run keeps the rows of other modules' workers
    rows = farm.api.get("/v1/workers").json()["workers"]
    held = next(w for w in rows if w["name"] == farm.worker_name)["adapters"]
    assert {(a["name"], a["sha256"]) for a in held} == {("brand-x", brand["sha256"]), ("other", other["sha256"])}
    assert [a["name"] for a in held if a["in_slot"]] == ["brand-x"]


def test_a_batch_with_a_brand_adapter_renders_each_row_with_its_adapters_and_says_so_in_the_manifest(
    farm: LiveFarm, tmp_path: Path
) -> None:
    brand = _upload(farm, make_tiny_lora(tmp_path / "b.safetensors", seed=5), "house-style", default_scale=0.9)
    catalog = [{"sku": "A", "p": "mug"}, {"sku": "B", "p": "vase"}, {"sku": "C", "p": "bowl", "lora": "house-style:0"}]
    created = farm.api.post(
        "/v1/batches",
        json={
            "template": "photo of a {p}",
            "rows": catalog,
            "defaults": {"width": 256, "height": 256, "steps": 2, "loras": [{"name": "house-style"}]},
        },
    )
    assert created.status_code == 202, created.text
    batch_id = created.json()["id"]
    wait_for(lambda: farm.api.get(f"/v1/batches/{batch_id}").json()["status"] != "active", 120, "the batch to end")
    lines = list(csv.DictReader(io.StringIO(farm.api.get(f"/v1/batches/{batch_id}/manifest.csv").text)))
    assert [line["status"] for line in lines] == ["succeeded"] * 3
    loras = {line["key"]: line["loras"] for line in lines}
    assert loras == {
        "A": f"house-style:0.9:{brand['sha256']}",
        "B": f"house-style:0.9:{brand['sha256']}",
        "C": f"house-style:0:{brand['sha256']}",
    }
    # row C at scale 0 is the base model's image of its prompt
    plain = farm.wait_job(
        farm.submit(prompt="photo of a bowl", width=256, height=256, steps=2, seed=lines[2]["seed"], dedup=False)
    )
    assert _pixels(farm, plain["id"]) == _pixels(farm, lines[2]["job_id"])
