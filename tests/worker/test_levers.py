"""Throughput levers leave the images alone: the tiny model on a CPU, float32.

Tolerance: one 8-bit level per pixel. Batched and unbatched calls (or 34 and 512 encoder tokens) run different
matmul and attention shapes, which round differently by about 1e-5 in float32; that moves a pixel across an
8-bit rounding boundary now and then, never further. On an H200 in bf16 the same comparison moved pixels by up
to 6 levels (mean 0.69) for the text-encoding lever (BENCHMARKS.md), which is why that lever is off by default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from worker import acceleration
from worker.render import RenderRequest
from worker.runtime import Runtime
from worker.text_encoding import can_encode_unpadded, encode_prompts

SHORT = "a red mug"
LONG = "a much longer prompt about a blue ceramic chair in a bright studio with soft light and long shadows"


def _runtime(models: Path, **levers: object) -> Runtime:
    rt = Runtime("tiny", None, "auto", "cpu", models, 1536 * 1536, **levers)  # type: ignore[arg-type]
    rt.load()
    return rt


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def _plain(rt: Runtime, prompt: str, seed: int, size: int = 256, steps: int = 3) -> np.ndarray:
    """The unmodified pipeline, one image alone: the reference every farm image must match."""
    with torch.inference_mode():
        out = rt.pipe(
            prompt=[prompt],
            height=size,
            width=size,
            num_inference_steps=steps,
            guidance_scale=0.0,
            generator=[torch.Generator("cpu").manual_seed(seed)],
        )
    return np.asarray(out.images[0], dtype=np.int16)


def test_unpadded_text_encoding_gives_the_pipelines_embeddings(models: Path) -> None:
    rt = _runtime(models)
    with torch.inference_mode():
        ours = encode_prompts(rt.pipe, [SHORT, LONG])
        theirs = rt.pipe.encode_prompt([SHORT, LONG], rt.pipe._execution_device, do_classifier_free_guidance=False)[0]
    assert [t.shape for t in ours] == [t.shape for t in theirs]
    assert max(float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True)) < 1e-6


def test_left_padding_tokenizer_keeps_the_pipelines_own_encoding(models: Path) -> None:
    rt = _runtime(models, encode_unpadded=True)
    assert rt._prompt_encoder() is not None
    rt.pipe.tokenizer.padding_side = "left"  # left pads would shift the real tokens' positions
    try:
        assert not can_encode_unpadded(rt.pipe)
        assert rt._prompt_encoder() is None
    finally:
        rt.pipe.tokenizer.padding_side = "right"


def test_batched_jobs_with_unpadded_encoding_equal_the_plain_pipeline_per_seed(models: Path) -> None:
    # given: two jobs of different prompt lengths (a padding mask inside the DiT), one with two images
    rt = _runtime(models, encode_unpadded=True)
    reqs = [RenderRequest(SHORT, 256, 256, 3, 0.0, [3]), RenderRequest(LONG, 256, 256, 3, 0.0, [4, 5])]
    # when: rendered together in one call
    together = rt.render_many(reqs)
    # then: each image is its seed rendered alone by the unmodified pipeline
    pairs = [(together[0][0], SHORT, 3), (together[1][0], LONG, 4), (together[1][1], LONG, 5)]
    for image, prompt, seed in pairs:
        assert np.abs(np.asarray(image, dtype=np.int16) - _plain(rt, prompt, seed)).max() <= 1
    assert not np.array_equal(np.asarray(together[1][0]), np.asarray(together[1][1]))


def test_compiled_blocks_compile_at_warmup_and_not_in_steady_state(models: Path) -> None:
    # given: regional compile (dynamo's eager backend: the same tracing and guards, no C++ compiler needed)
    rt = _runtime(models, compile_mode="on", compile_backend="eager", batch_max_images=4, warm_sizes=((256, 256),))
    assert rt.compiled
    rt.warmup(256)
    assert rt.compiled and rt.compile_error is None
    warmed = acceleration.graphs_compiled()
    assert warmed > 0
    # when: the kinds of call a farm makes, with other prompts, seeds and batch sizes
    rt.render(RenderRequest(LONG, 256, 256, 2, 0.0, [9]))
    rt.render_many([RenderRequest(SHORT, 256, 256, 2, 0.0, [1, 2]), RenderRequest(LONG, 256, 256, 2, 0.0, [3])])
    rt.render_many([RenderRequest(LONG, 256, 256, 2, 0.0, [1]) for _ in range(4)])
    # then: no new graph
    assert acceleration.graphs_compiled() == warmed
    # and the compiled image is the eager one
    [image] = rt.render(RenderRequest(SHORT, 256, 256, 3, 0.0, [3]))
    assert np.abs(np.asarray(image, dtype=np.int16) - _plain(rt, SHORT, 3)).max() <= 1


def test_a_compiler_that_fails_leaves_the_worker_running_eagerly(models: Path) -> None:
    rt = _runtime(models, compile_mode="on", compile_backend="no-such-backend")
    assert not rt.compiled and "no-such-backend" in (rt.compile_error or "")
    rt.warmup(256)
    [image] = rt.render(RenderRequest(SHORT, 256, 256, 2, 0.0, [1]))
    assert image.size == (256, 256)


def test_compile_is_off_by_default_on_a_cpu_and_under_sequential_offload() -> None:
    assert not acceleration.should_compile("auto", "cpu", "full")
    assert acceleration.should_compile("auto", "cuda", "full")
    assert not acceleration.should_compile("auto", "cuda", "model-offload")
    assert not acceleration.should_compile("on", "cuda", "sequential-offload")
    assert not acceleration.should_compile("off", "cuda", "full")
