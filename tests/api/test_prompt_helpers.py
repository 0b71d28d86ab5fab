"""Prompt helpers: the default negative prompt and rule-based `enhance`, in the job's record (issue 16, item 5)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.prompt_helpers import enhance_words, prepare
from tests.api.batch_helpers import batch_api

DEFAULT_NEGATIVE = "blurry, watermark, text"


@pytest.fixture
def api(tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    db = f"sqlite:///{tmp_path / 'zfarm.db'}"
    with batch_api(db, tmp_path, redis_url, default_negative_prompt=DEFAULT_NEGATIVE) as client:
        yield client


@pytest.mark.parametrize(
    ("prompt", "preset", "added"),
    [
        ("studio photo of a ceramic mug", None, ["soft diffused studio lighting", "sharp focus", "high detail"]),
        ("a slice of chocolate cake on a plate", None, ["warm soft window light", "sharp focus", "high detail"]),
        ("portrait of a woman in linen", None, ["soft key light with gentle fill", "sharp focus", "high detail"]),
        ("a tent on a mountain ridge", None, ["natural daylight", "sharp focus", "high detail"]),
        ("a mug in warm sunlight, sharp focus", None, ["high detail"]),  # names its light: only what is missing
        ("a leather wallet", "thumbnail-512", ["soft diffused studio lighting", "sharp focus", "high detail",
                                               "clear silhouette"]),
    ],
)  # fmt: skip
def test_enhance_adds_only_the_lighting_and_quality_words_a_prompt_lacks(
    prompt: str, preset: str | None, added: list[str]
) -> None:
    assert enhance_words(prompt, preset)[0] == added


def test_default_negative_prompt_is_used_only_with_guidance_and_without_ones_own() -> None:
    assert prepare("a mug", None, 0.0, enhance=False, preset=None, default_negative="blurry").negative_prompt is None
    used = prepare("a mug", None, 2.0, enhance=False, preset=None, default_negative="blurry")
    assert used.negative_prompt == "blurry" and "ZFARM_DEFAULT_NEGATIVE_PROMPT" in used.adjustments[0]
    own = prepare("a mug", "cartoon", 2.0, enhance=False, preset=None, default_negative="blurry")
    assert own.negative_prompt == "cartoon" and own.adjustments == []


def test_a_job_records_its_final_prompt_negative_prompt_and_adjustments(api: TestClient) -> None:
    job = api.post(
        "/v1/jobs", json={"prompt": "studio photo of a ceramic mug", "enhance": True, "guidance_scale": 2.0}
    ).json()
    final = "studio photo of a ceramic mug, soft diffused studio lighting, sharp focus, high detail"
    assert job["parameters"]["prompt"] == final and job["requested_prompt"] == "studio photo of a ceramic mug"
    assert job["parameters"]["negative_prompt"] == DEFAULT_NEGATIVE
    assert job["adjustments"] == [
        "enhance: added 'soft diffused studio lighting, sharp focus, high detail' (subject product)",
        "negative_prompt: the farm's default (ZFARM_DEFAULT_NEGATIVE_PROMPT)",
    ]
    plain = api.post("/v1/jobs", json={"prompt": "a mug"}).json()  # guidance 0, no enhance: nothing changes
    assert plain["parameters"]["prompt"] == "a mug" and plain["parameters"]["negative_prompt"] is None
    assert plain["adjustments"] == [] and plain["requested_prompt"] is None
    # the same request again with an Idempotency-Key is recognised as the same job
    body = {"prompt": "a vase", "enhance": True}
    first = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
    again = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json()["id"] == first.json()["id"]


def test_a_batch_enhances_every_row_with_its_preset(api: TestClient) -> None:
    catalog = [{"sku": "A", "product": "leather wallet", "preset": "thumbnail-512"}, {"sku": "B", "product": "bread"}]
    created = api.post(
        "/v1/batches",
        json={"template": "a {product}", "rows": catalog, "enhance": True, "defaults": {"guidance_scale": 1.5}},
    )
    assert created.status_code == 202, created.text
    jobs = {j["item_key"]: j for j in api.get("/v1/jobs", params={"limit": 10}).json()["jobs"]}
    a, b = jobs["A"], jobs["B"]
    assert (
        a["parameters"]["prompt"].endswith("high detail, clear silhouette")
        and a["requested_prompt"] == "a leather wallet"
    )
    assert "preset thumbnail-512" in a["adjustments"][0]
    assert b["parameters"]["prompt"] == "a bread, warm soft window light, sharp focus, high detail"
    assert b["parameters"]["negative_prompt"] == DEFAULT_NEGATIVE
