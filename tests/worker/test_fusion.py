"""Fused projections and real-valued RoPE compute what the diffusers modules compute (tiny model, CPU, float32)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from worker import acceleration, fusion
from worker.render import RenderRequest
from worker.runtime import Runtime

SHORT = "a red mug"
LONG = "a much longer prompt about a blue ceramic chair in a bright studio with soft light and long shadows"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def _latents(rt: Runtime, seeds: list[int], prompts: list[str]) -> torch.Tensor:
    with torch.inference_mode():
        return rt.pipe(
            prompt=prompts,
            height=256,
            width=256,
            num_inference_steps=3,
            guidance_scale=0.0,
            generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
            output_type="latent",
        ).images


def test_fused_blocks_give_the_unfused_latents(models: Path) -> None:
    # given: the tiny pipeline, two prompts of different lengths (a padding mask inside the DiT)
    rt = Runtime("tiny", None, "auto", "cpu", models, 1536 * 1536)
    rt.load()
    before = _latents(rt, [1, 2], [SHORT, LONG])
    # when: every block is fused
    fused = fusion.fuse_transformer(rt.pipe.transformer)
    after = _latents(rt, [1, 2], [SHORT, LONG])
    # then: all 4 blocks were rewritten and the latents agree to float32 rounding
    assert fused == 4 and fusion.is_fused(rt.pipe.transformer)
    assert float((after - before).norm() / before.norm()) < 1e-5
    names = {n for n, _ in rt.pipe.transformer.layers[0].named_modules()}
    assert {"attention.to_qkv", "feed_forward.w13"} <= names and "attention.to_q" not in names
    assert fusion.fuse_transformer(rt.pipe.transformer) == 0  # a second call changes nothing


def test_real_rope_is_the_complex_product() -> None:
    x = torch.randn(2, 5, 3, 8)
    angles = torch.randn(2, 5, 4)
    freqs = torch.polar(torch.ones_like(angles), angles)
    want = torch.view_as_real(torch.view_as_complex(x.reshape(2, 5, 3, 4, 2)) * freqs.unsqueeze(2)).flatten(3)
    got = fusion.apply_real_rope(x, torch.view_as_real(freqs))
    assert torch.allclose(got, want, atol=1e-6)


def test_fused_compiled_worker_renders_the_plain_pipelines_image_without_steady_state_recompiles(
    models: Path,
) -> None:
    # given: fusion and compile on (dynamo's eager backend: the same tracing and guards, no C++ compiler)
    rt = Runtime(
        "tiny", None, "auto", "cpu", models, 1536 * 1536, compile_mode="on", compile_backend="eager", fuse_mode="auto"
    )
    rt.warm_sizes = ((256, 256), (256, 512))
    rt.load()
    assert rt.fused and rt.compiled
    rt.warmup(256)
    warmed = acceleration.graphs_compiled()
    # when: other prompts, seeds and a second size
    [image] = rt.render(RenderRequest(SHORT, 256, 256, 3, 0.0, [3]))
    rt.render(RenderRequest(LONG, 256, 512, 2, 0.0, [4]))
    # then: no new graph, and the image is the unmodified pipeline's to one 8-bit level
    assert acceleration.graphs_compiled() == warmed
    plain = Runtime("tiny", None, "auto", "cpu", models, 1536 * 1536)
    plain.load()
    with torch.inference_mode():
        ref = plain.pipe(
            prompt=[SHORT],
            height=256,
            width=256,
            num_inference_steps=3,
            guidance_scale=0.0,
            generator=[torch.Generator("cpu").manual_seed(3)],
        ).images[0]
    assert np.abs(np.asarray(image, np.int16) - np.asarray(ref, np.int16)).max() <= 1
