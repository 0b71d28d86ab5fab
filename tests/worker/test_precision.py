"""The FP8 tier: which layers it converts (full-size shapes on the meta device), and who may run it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import ZImageTransformer2DModel

from worker import fusion, precision
from worker.runtime import Runtime


@pytest.fixture(scope="module")
def full_size() -> ZImageTransformer2DModel:
    with torch.device("meta"):
        return ZImageTransformer2DModel()  # the published shapes: 30 main blocks, 2 + 2 refiners


def test_fp8_takes_the_main_blocks_linear_layers_and_leaves_adaln_refiners_embedders_and_final_layer(
    full_size: ZImageTransformer2DModel,
) -> None:
    targets = precision.fp8_targets(full_size)
    # 7 linear layers per main block (q, k, v, out, w1, w2, w3); adaLN stays bf16
    assert len(targets) == 30 * 7
    assert all(t.startswith("layers.") and "adaLN" not in t for t in targets)
    assert not any(t.startswith(("noise_refiner", "context_refiner", "all_final_layer", "t_embedder")) for t in targets)
    assert "layers.0.attention.to_q" in targets and "layers.29.feed_forward.w3" in targets


def test_fused_blocks_give_four_fp8_layers_each_and_torchao_visits_exactly_those(
    full_size: ZImageTransformer2DModel,
) -> None:
    fusion.fuse_transformer(full_size)
    targets = precision.fp8_targets(full_size)
    assert len(targets) == 30 * 4
    assert {t.split(".", 2)[2] for t in targets} == {
        "attention.to_qkv",
        "attention.to_out.0",
        "feed_forward.w13",
        "feed_forward.w2",
    }
    quant_api = pytest.importorskip("torchao.quantization.quant_api")
    seen: list[torch.nn.Module] = []
    # torchao's own traversal, with our filter, as quantize_ calls it (module first, then its name)
    quant_api._replace_with_custom_fn_if_matches_filter(
        full_size, lambda m: seen.append(m) or m, precision.is_fp8_target
    )
    assert len(seen) == len(targets)


@pytest.mark.parametrize(
    ("device", "capability", "needs"),
    [("cpu", None, "NVIDIA GPU"), ("cuda", (8, 6), "this GPU has 8.6"), ("cuda", None, "NVIDIA GPU")],
)
def test_fp8_is_refused_where_it_cannot_run(device: str, capability: tuple[int, int] | None, needs: str) -> None:
    problem = precision.fp8_problem(device, capability)
    if problem is not None and "torchao" in problem:
        pytest.skip("torchao is not installed here")
    assert problem is not None and needs in problem


def test_fp8_runs_on_hopper_and_ada() -> None:
    pytest.importorskip("torchao")
    assert precision.fp8_problem("cuda", (9, 0)) is None
    assert precision.fp8_problem("cuda", (8, 9)) is None


def test_a_cpu_worker_asked_for_fp8_refuses_to_start_with_the_reason(tmp_path: Path) -> None:
    rt = Runtime("tiny", None, "auto", "cpu", tmp_path, 1536 * 1536, precision="fp8")
    with pytest.raises(precision.PrecisionUnavailable, match="fp8"):
        rt.check_precision()
    with pytest.raises(precision.PrecisionUnavailable, match="fp8"):
        rt.load()
    assert rt.pipe is None  # refused before any loading
