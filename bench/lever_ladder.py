"""Issue 15's levers one by one, in one process, through the worker's own Runtime (no queue).

1. The DiT blocks compiled as the farm did before issue 15 (no fusion, eager text encoder and VAE): a whole render
   to 8-bit images, timed; then each stage alone: prompt encoding, VAE decode, the old host-side output path
   (`output_type="np"`, NumPy checks, `numpy_to_pil`) against the new device-side one, and PNG encoding (Pillow,
   one core, against worker/png.py).
2. FP8 drift: latents of the same prompts and seeds, bf16 against the main blocks quantized to FP8 rowwise
   (eager), relative L2. Random weights: a statement about numerics, not about image quality.
3. The VAE decoder compiled in place (channels_last, dynamic shapes): the stages again.

The fused projections and real-valued RoPE are measured by the farm itself (bench/gpu_throughput.py: GPU seconds
per image with every lever on), against step 1's render here.

usage: python -m bench.lever_ladder --model DIR [--size 1024] [--steps 8] [--reps 3]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.prompts import prompt
from worker import acceleration, precision
from worker.images import _SRGB, encode_image
from worker.pixels import guard_output, to_pil
from worker.render import RenderRequest
from worker.runtime import Runtime


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], reps: int, warm: int = 1) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 4)


def old_output_path(pipe: Any, decoded: torch.Tensor) -> list:
    """What the worker did before: float pixels to the host, NumPy checks, then `numpy_to_pil`."""
    arrays = pipe.image_processor.postprocess(decoded, output_type="np")
    if not np.isfinite(arrays).all() or any(float(a.max()) < 1 / 255 for a in arrays):
        raise RuntimeError("bad output")
    return pipe.numpy_to_pil(arrays)


def new_output_path(pipe: Any, decoded: torch.Tensor) -> list:
    pixels = pipe.image_processor.postprocess(decoded, output_type="pt")
    guard_output(pixels)
    return to_pil(pixels)


def stages(rt: Runtime, size: int, reps: int) -> dict[str, float]:
    pipe, out = rt.pipe, {}
    dev = pipe._execution_device
    prompts = [prompt(7)]
    latents = torch.randn(1, 16, size // 8, size // 8, device=dev, dtype=pipe.vae.dtype)
    with torch.inference_mode():
        out["encode_prompt_s"] = timed(
            lambda: pipe.encode_prompt(list(prompts), dev, do_classifier_free_guidance=False), reps + 2, warm=2
        )
        out["vae_decode_s"] = timed(lambda: pipe.vae.decode(latents).sample, reps, warm=2)
        decoded = pipe.vae.decode(latents).sample
        out["output_old_np_s"] = timed(lambda: old_output_path(pipe, decoded), reps)
        out["output_new_device_s"] = timed(lambda: new_output_path(pipe, decoded), reps)
        same = np.array_equal(
            np.asarray(old_output_path(pipe, decoded)[0]), np.asarray(new_output_path(pipe, decoded)[0])
        )
        out["output_paths_same_pixels"] = float(same)
    return out


def latents(rt: Runtime, size: int, steps: int, seeds: list[int]) -> list[torch.Tensor]:
    out = []
    for seed in seeds:  # one at a time: the batch-1 graph is the one compiled
        with torch.inference_mode():
            result = rt.pipe(
                prompt=[prompt(100 + seed)],
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=0.0,
                generator=[torch.Generator("cpu").manual_seed(seed)],
                output_type="latent",
            )
        out.append(result.images[0].float().cpu())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/zfarm-ladder-cache"))
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    res: dict[str, Any] = {}

    def save() -> None:
        if a.out:
            a.out.write_text(json.dumps(res, indent=1))

    t = time.perf_counter()
    rt = Runtime(a.model, None, "full", "auto", Path("/tmp/zfarm-ladder-models"), 1536 * 1536)
    rt.compile_mode, rt.compile_parts, rt.compile_cache_dir = "on", ("blocks",), a.cache
    rt.load()
    req = RenderRequest(prompt(7), a.size, a.size, a.steps, 0.0, [7])
    rt.render(req)  # compiles the blocks
    res["1_load_and_compile_blocks_s"] = round(time.perf_counter() - t, 1)
    res["1_render_blocks_compiled_s"] = timed(lambda: rt.render(req), a.reps)
    res["1_stages"] = stages(rt, a.size, a.reps)
    image = rt.render(req)[0]
    res["png_pillow_s"] = timed(lambda: _pillow_png(image), a.reps)
    res["png_ours_s"] = timed(lambda: encode_image(image, "png", 95, {"seed": 7}), a.reps)
    save()
    print(json.dumps(res), flush=True)

    if rt.device != "cuda":
        res["2_fp8"] = "skipped: FP8 needs a CUDA GPU"
    else:
        drift_fp8(rt, a, res)
        save()
        print(json.dumps(res), flush=True)
    t = time.perf_counter()
    acceleration.compile_vae_decoder(rt.pipe, "inductor")
    res["3_stages_vae_compiled"] = stages(rt, a.size, a.reps)  # its warm-up calls compile
    res["3_compile_vae_and_stages_s"] = round(time.perf_counter() - t, 1)
    save()
    print(json.dumps(res), flush=True)
    print(table(res), flush=True)


def drift_fp8(rt: Runtime, a: argparse.Namespace, res: dict[str, Any]) -> None:
    """Latents of the same prompts and seeds: compiled bf16 blocks, then the main blocks in FP8 (eager)."""
    seeds = [1, 2]
    ref = latents(rt, a.size, a.steps, seeds)
    acceleration.uncompile_blocks(rt.pipe)
    res["2_fp8_layers"] = precision.quantize_fp8(rt.pipe.transformer)
    fp8 = latents(rt, a.size, a.steps, seeds)
    rel = [float((f - r).norm() / r.norm()) for f, r in zip(fp8, ref, strict=True)]
    res["2_fp8_vs_bf16_latent_rel_l2"] = [round(x, 4) for x in rel]


def _pillow_png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", icc_profile=_SRGB)
    return buf.getvalue()


def table(res: dict[str, Any]) -> str:
    rows = ["| lever ladder (random weights) | value |", "|---|---|"]
    for key, value in res.items():
        if isinstance(value, dict):
            rows.extend(f"| {key}.{k} | {v} |" for k, v in value.items())
        else:
            rows.append(f"| {key} | {value} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
