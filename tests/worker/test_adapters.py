"""LoRA adapters in the render runtime (tiny model, CPU, float32): the real diffusers/PEFT loading path.

What must hold: scale 0 is the base model; an adapter changes the image and the same again on a rerun; a job
without adapters after one with them is a fresh worker's image (no leak); swapping adapters gives each job its
fresh-worker image; the farm's image is the one diffusers' own LoRA loading makes; with compiled blocks a switch
compiles nothing. Each test runs in both adapter modes: merged into the weights, and the PEFT slot.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.lora_keys import module_table
from core.storage import LocalStorage, lora_key
from tests.lora_helpers import ATTENTION, make_tiny_lora
from worker import acceleration
from worker.adapters import AdapterFiles, AdapterLibrary, AdapterUnavailable
from worker.render import RenderRequest
from worker.runtime import Runtime
from worker.tiny_model import build_tiny_pipeline

PROMPT = "studio photo of a ceramic mug"


@pytest.fixture(scope="module", params=["merge", "slot"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def farm_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("adapters")
    storage = LocalStorage(root / "storage")
    made = {
        "brand": make_tiny_lora(root / "src" / "brand.safetensors", seed=1, rank=4, alpha=8),
        "other": make_tiny_lora(root / "src" / "other.safetensors", seed=2, rank=6, targets=ATTENTION, style="kohya"),
    }
    shas = {}
    for name, path in made.items():
        data = path.read_bytes()
        shas[name] = hashlib.sha256(data).hexdigest()
        storage.put(lora_key(shas[name]), data)
    return {"root": root, "storage": storage, "files": made, "sha": shas, "models": root / "models"}


def _runtime(dirs: dict[str, Any], mode: str, name: str = "w", **levers: object) -> Runtime:
    library = AdapterLibrary(
        AdapterFiles(dirs["storage"], dirs["root"] / f"cache-{name}", 10**9), module_table("tiny"), rank=16, mode=mode
    )
    rt = Runtime("tiny", None, "auto", "cpu", dirs["models"], 1536 * 1536, adapters=library, **levers)  # type: ignore[arg-type]
    rt.load()
    return rt


def _lora(dirs: dict[str, Any], name: str, scale: float) -> dict[str, Any]:
    return {"name": name, "sha256": dirs["sha"][name], "scale": scale, "rank": {"brand": 4, "other": 6}[name]}


def _render(rt: Runtime, *loras: dict[str, Any], seed: int = 3) -> np.ndarray:
    req = RenderRequest(PROMPT, 256, 256, 3, 0.0, [seed], extra={"loras": list(loras)})
    [image] = rt.render(req)
    return np.asarray(image)


@pytest.fixture(scope="module")
def fresh(farm_dirs: dict[str, Any], mode: str) -> dict[str, np.ndarray]:
    """Each job's image on a worker that rendered nothing before it."""
    out = {}
    for key, loras in {
        "base": [],
        "brand": [_lora(farm_dirs, "brand", 0.8)],
        "other": [_lora(farm_dirs, "other", 1.2)],
        "both": [_lora(farm_dirs, "brand", 0.8), _lora(farm_dirs, "other", 1.2)],
    }.items():
        out[key] = _render(_runtime(farm_dirs, mode, f"fresh-{key}"), *loras)
    return out


def test_scale_zero_is_the_base_model_and_scale_08_differs_and_repeats(
    farm_dirs: dict[str, Any], fresh: dict[str, np.ndarray], mode: str
) -> None:
    rt = _runtime(farm_dirs, mode)
    zero = _render(rt, _lora(farm_dirs, "brand", 0.0))
    styled = _render(rt, _lora(farm_dirs, "brand", 0.8))
    again = _render(rt, _lora(farm_dirs, "brand", 0.8))
    assert np.array_equal(zero, fresh["base"])
    assert np.abs(styled.astype(int) - fresh["base"]).mean() > 5  # a visible change, not rounding
    assert np.array_equal(styled, again) and np.array_equal(styled, fresh["brand"])


def test_a_job_without_adapters_after_styled_jobs_renders_the_fresh_workers_image(
    farm_dirs: dict[str, Any], fresh: dict[str, np.ndarray], mode: str
) -> None:
    rt = _runtime(farm_dirs, mode)
    _render(rt, _lora(farm_dirs, "brand", 0.8))
    _render(rt, _lora(farm_dirs, "brand", 0.8), _lora(farm_dirs, "other", 1.2))
    assert np.array_equal(_render(rt), fresh["base"])
    assert _holds_the_base(rt)


def _holds_the_base(rt: Runtime) -> bool:
    """slot: every LoRA layer off; merge: no LoRA layer, and every targeted weight is the pristine copy's bytes."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in rt.pipe.transformer.modules() if isinstance(m, BaseTunerLayer)]
    if rt.adapters.mode == "slot":
        return bool(layers) and all(layer.disable_adapters for layer in layers)
    targets = rt.adapters._merged.targets.values()
    return not layers and all(torch.equal(t.linear.weight[t.rows], t.pristine) for t in targets)


def test_swapping_between_adapters_on_one_worker_gives_each_job_its_fresh_worker_image(
    farm_dirs: dict[str, Any], fresh: dict[str, np.ndarray], mode: str
) -> None:
    rt = _runtime(farm_dirs, mode)
    brand, other = _lora(farm_dirs, "brand", 0.8), _lora(farm_dirs, "other", 1.2)
    for loras, key in [
        ([brand], "brand"),
        ([other], "other"),
        ([], "base"),
        ([brand, other], "both"),
        ([brand], "brand"),
        ([other], "other"),
    ]:
        assert np.array_equal(_render(rt, *loras), fresh[key]), key
    # the device cache held both adapters; the worker row would say so
    assert {item["name"] for item in rt.adapters.state()["held"]} == {"brand", "other"}


def test_one_file_uploaded_under_a_second_name_is_shown_under_the_name_its_latest_job_used(
    farm_dirs: dict[str, Any], mode: str
) -> None:
    rt = _runtime(farm_dirs, mode)
    _render(rt, _lora(farm_dirs, "brand", 0.8))
    _render(rt, {**_lora(farm_dirs, "brand", 0.5), "name": "brand-copy"})  # the same bytes, another name
    assert [(item["name"], item["sha256"]) for item in rt.adapters.state()["held"]] == [
        ("brand-copy", farm_dirs["sha"]["brand"])
    ]


def test_the_farms_image_is_the_one_diffusers_own_lora_loading_makes(farm_dirs: dict[str, Any], mode: str) -> None:
    # given: diffusers' documented path on a fresh pipeline (load_lora_weights + set_adapters with weights)
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    for name, path in farm_dirs["files"].items():
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
    pipe.set_adapters(["brand", "other"], [0.8, 1.2])
    with torch.inference_mode():
        expected = pipe(
            PROMPT,
            height=256,
            width=256,
            num_inference_steps=3,
            guidance_scale=0.0,
            generator=torch.Generator("cpu").manual_seed(3),
            output_type="np",
        ).images[0]
    # when: the farm's slot (or merged weights) with both adapters (one in diffusers' format, one in Kohya's)
    rt = _runtime(farm_dirs, mode)
    got = _render(rt, _lora(farm_dirs, "brand", 0.8), _lora(farm_dirs, "other", 1.2))
    # then: the same image, to float32 rounding (one 8-bit level at most)
    assert np.abs(got.astype(int) - np.round(expected * 255).astype(int)).max() <= 1
    assert np.abs(got.astype(int) - _render(rt).astype(int)).mean() > 5


def test_with_compiled_blocks_switching_adapters_compiles_no_graph(farm_dirs: dict[str, Any], mode: str) -> None:
    # given: regional compile (dynamo's eager backend: the same tracing and guards), warmed with the slot off and on
    rt = _runtime(farm_dirs, mode, "compiled", compile_mode="on", compile_backend="eager", warm_sizes=((256, 256),))
    assert rt.compiled
    rt.warmup(256)
    warmed = acceleration.graphs_compiled()
    brand, other = _lora(farm_dirs, "brand", 0.8), _lora(farm_dirs, "other", 1.2)
    # when: jobs switch between adapters, scales and none
    images = [_render(rt, *loras) for loras in ([brand], [other], [], [brand, other], [{**brand, "scale": 0.3}], [])]
    # then: no new graph, and the compiled images are the eager ones
    assert acceleration.graphs_compiled() == warmed
    # slot: four writes (a job without adapters turns the slot off); merge: six (the base is written back too)
    assert rt.adapters.switches == {"slot": 4, "merge": 6}[mode]
    eager = _runtime(farm_dirs, mode, "eager")
    assert np.abs(images[3].astype(int) - _render(eager, brand, other).astype(int)).max() <= 1
    assert np.abs(images[2].astype(int) - _render(eager).astype(int)).max() <= 1


def test_a_file_that_changed_in_storage_or_is_gone_fails_the_job_with_the_reason(
    farm_dirs: dict[str, Any], tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "storage")
    sha = farm_dirs["sha"]["brand"]
    storage.put(lora_key(sha), b"not the file that was uploaded")
    files = AdapterFiles(storage, tmp_path / "cache", 10**9)
    with pytest.raises(AdapterUnavailable, match="has sha256"):
        files.path(sha)
    with pytest.raises(AdapterUnavailable, match="not in storage"):
        files.path("0" * 64)
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-fetched is left to be used later


def test_the_disk_cache_keeps_the_most_recent_files_within_its_budget(
    farm_dirs: dict[str, Any], tmp_path: Path
) -> None:
    sizes = {name: path.stat().st_size for name, path in farm_dirs["files"].items()}
    files = AdapterFiles(farm_dirs["storage"], tmp_path / "cache", max(sizes.values()) + 1)
    first = files.path(farm_dirs["sha"]["brand"])
    assert first.read_bytes() == farm_dirs["files"]["brand"].read_bytes()
    second = files.path(farm_dirs["sha"]["other"])
    assert second.is_file() and not first.exists()  # over budget: the older one went
