"""LoRA adapters merged into the weights (ZFARM_LORA_MODE=merge), tiny model on the CPU, the real loading path.

What must hold: the merged image is the slot's image (to float32 rounding); a job without adapters after styled
ones is the image, and the weights, of a worker without adapters at all; with fused blocks the adapters land in
the right rows of the stacked matrices; switching compiles nothing and keeps every weight tensor where it was;
in bf16 a merge is rounded once from the pristine weights and never drifts; auto picks merge only where it fits.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
import torch

from core.lora_keys import module_table
from core.storage import LocalStorage, lora_key
from tests.lora_helpers import ATTENTION, make_tiny_lora
from worker import acceleration, fusion
from worker.adapters import AdapterFiles, AdapterLibrary, choose_mode, read_weights
from worker.merged_weights import MergedWeights
from worker.render import RenderRequest
from worker.runtime import Runtime
from worker.tiny_model import build_tiny_pipeline

PROMPT = "studio photo of a ceramic mug"
RANKS = {"brand": 4, "other": 6}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("merged")
    storage = LocalStorage(root / "storage")
    made = {
        "brand": make_tiny_lora(root / "src" / "brand.safetensors", seed=1, rank=4, alpha=8),
        "other": make_tiny_lora(root / "src" / "other.safetensors", seed=2, rank=6, targets=ATTENTION, style="kohya"),
    }
    shas = {}
    for name, path in made.items():
        shas[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        storage.put(lora_key(shas[name]), path.read_bytes())
    return {"root": root, "storage": storage, "files": made, "sha": shas}


def _runtime(dirs: dict[str, Any], mode: str | None, name: str, **levers: object) -> Runtime:
    library = None
    if mode is not None:
        files = AdapterFiles(dirs["storage"], dirs["root"] / f"cache-{name}", 10**9)
        library = AdapterLibrary(files, module_table("tiny"), rank=16, mode=mode)
    rt = Runtime("tiny", None, "auto", "cpu", dirs["root"] / "models", 1536 * 1536, adapters=library, **levers)  # type: ignore[arg-type]
    rt.load()
    return rt


def _lora(dirs: dict[str, Any], name: str, scale: float) -> dict[str, Any]:
    return {"name": name, "sha256": dirs["sha"][name], "scale": scale, "rank": RANKS[name]}


def _render(rt: Runtime, *loras: dict[str, Any], seed: int = 3) -> np.ndarray:
    [image] = rt.render(RenderRequest(PROMPT, 256, 256, 3, 0.0, [seed], extra={"loras": list(loras)}))
    return np.asarray(image).astype(int)


def test_the_merged_image_is_the_slots_image(dirs: dict[str, Any]) -> None:
    merged, slot = _runtime(dirs, "merge", "m1"), _runtime(dirs, "slot", "s1")
    assert merged.adapters.mode == "merge" and slot.adapters.mode == "slot"
    brand, other = _lora(dirs, "brand", 0.8), _lora(dirs, "other", 1.2)
    for loras in ([brand], [brand, other]):
        a, b = _render(merged, *loras), _render(slot, *loras)
        assert np.abs(a - b).max() <= 1, loras
        assert np.abs(a - _render(slot)).mean() > 5  # the adapter did change the image


def test_a_job_without_adapters_after_styled_ones_is_a_worker_without_adapters(dirs: dict[str, Any]) -> None:
    plain = _runtime(dirs, None, "plain")  # adapters off altogether: the weights as loaded
    rt = _runtime(dirs, "merge", "m2")
    _render(rt, _lora(dirs, "brand", 0.8))
    _render(rt, _lora(dirs, "brand", 0.8), _lora(dirs, "other", 1.2))
    _render(rt, _lora(dirs, "other", 0.5))
    assert np.array_equal(_render(rt), _render(plain))
    got, want = rt.pipe.transformer.state_dict(), plain.pipe.transformer.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)  # every weight bit for bit
    assert rt.adapters.state()["slot"] is None


def test_with_fused_blocks_each_adapter_lands_in_its_rows_of_the_stacked_matrices(dirs: dict[str, Any]) -> None:
    fused, unfused = _runtime(dirs, "merge", "f", fuse_mode="on"), _runtime(dirs, "merge", "u")
    assert fused.fused and not unfused.fused
    # `other` touches q, k and v only; `brand` every module, w1 and w3 included
    for loras in ([_lora(dirs, "other", 1.2)], [_lora(dirs, "brand", 0.8), _lora(dirs, "other", 1.2)]):
        styled = _render(fused, *loras)
        assert np.abs(styled - _render(unfused, *loras)).max() <= 1, loras
        assert np.abs(styled - _render(fused)).mean() > 5


def test_the_slot_still_refuses_fused_blocks(dirs: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match="ZFARM_LORA_MODE=merge"):
        _runtime(dirs, "slot", "s2", fuse_mode="on")


@pytest.mark.timeout(600)  # compiling (dynamo tracing) on a busy 2-core CPU
def test_compiled_fused_blocks_switch_merged_adapters_without_a_graph_or_a_new_tensor(dirs: dict[str, Any]) -> None:
    # given: compiled (dynamo's eager backend: the same tracing and guards) and fused, as ZFARM_FUSE=auto does
    rt = _runtime(
        dirs, "merge", "c", compile_mode="on", compile_backend="eager", fuse_mode="auto", warm_sizes=((256, 256),)
    )
    assert rt.compiled and rt.fused
    rt.warmup(256)
    warmed = acceleration.graphs_compiled()
    base = _render(rt)
    weights = {name: (id(p), p.data_ptr()) for name, p in rt.pipe.transformer.named_parameters()}
    brand, other = _lora(dirs, "brand", 0.8), _lora(dirs, "other", 1.2)
    # when: jobs switch between two adapters and back, twice, and end without adapters
    images = [_render(rt, *loras) for _ in range(2) for loras in ([brand], [other])] + [_render(rt)]
    # then: no new graph, the same tensors in the same storage, one write per switch, no drift across rounds
    assert acceleration.graphs_compiled() == warmed
    assert {name: (id(p), p.data_ptr()) for name, p in rt.pipe.transformer.named_parameters()} == weights
    assert rt.adapters.switches == 5
    assert all(np.array_equal(images[i], images[i % 2]) for i in range(4))
    assert np.array_equal(images[4], base)  # the base weights back, bit for bit
    eager = _runtime(dirs, "merge", "e", fuse_mode="on")
    assert np.abs(images[0] - _render(eager, brand)).max() <= 1  # compiled and eager agree to rounding
    assert np.abs(images[0] - base).mean() > 5


def test_in_bf16_a_merge_is_rounded_once_from_the_base_and_a_restore_is_exact(dirs: dict[str, Any]) -> None:
    table = module_table("tiny")
    transformer = build_tiny_pipeline().transformer.to(torch.bfloat16)
    fusion.fuse_transformer(transformer)
    loaded = {k: v.clone() for k, v in transformer.state_dict().items()}
    brand = read_weights(dirs["files"]["brand"], table, "cpu", torch.float32)
    other = read_weights(dirs["files"]["other"], table, "cpu", torch.float32)
    merged = MergedWeights(transformer, table)

    merged.write([(brand, 0.8), (other, 1.2)])
    for name in ("layers.0.attention.to_k", "layers.1.feed_forward.w3", "noise_refiner.0.attention.to_out.0"):
        target = merged.targets[name]
        exact = target.pristine.float() + 0.8 * (brand[name][1] @ brand[name][0])
        if name in other:
            exact += 1.2 * (other[name][1] @ other[name][0])
        got = target.linear.weight[target.rows]
        assert got.dtype == torch.bfloat16
        # rounded once: within half a bf16 step of the float32 sum (a second rounding could be a whole step off)
        assert ((got.float() - exact).abs() <= exact.abs() * 2.0**-8 + 1e-30).all(), name
        assert not torch.equal(got, target.pristine)
    first = {k: v.clone() for k, v in transformer.state_dict().items()}

    for _ in range(5):  # switching back and forth recomputes from the base: no drift
        merged.write([(other, 0.3)])
        merged.write([(brand, 0.8), (other, 1.2)])
    assert all(torch.equal(v, first[k]) for k, v in transformer.state_dict().items())

    merged.write([])
    assert all(torch.equal(v, loaded[k]) for k, v in transformer.state_dict().items())


def test_auto_merges_under_the_full_policy_where_the_copy_fits_and_uses_the_slot_elsewhere() -> None:
    gib = 1024**3
    assert choose_mode("auto", "full", None, 12 * gib) == "merge"  # a CPU
    assert choose_mode("auto", "full", 100 * gib, 36 * gib) == "merge"
    assert choose_mode("auto", "full", 30 * gib, 36 * gib) == "slot"
    assert choose_mode("auto", "model-offload", 100 * gib, 36 * gib) == "slot"
    assert choose_mode("slot", "full", 100 * gib, 36 * gib) == "slot"
    with pytest.raises(RuntimeError, match="needs the memory policy full"):
        choose_mode("merge", "sequential-offload", 100 * gib, 36 * gib)
