"""Single levers measured in-process with the worker's own Runtime (no queue), for the lever table.

Eager (no compile), batch 1: the pipeline's padded text encoding against ours on the real tokens (time and the
pixel deviation it causes), text encoding alone both ways, and PNG encoding of one rendered image (the CPU work
the finisher threads take off the render loop). Compile and batching are measured through the farm itself.

usage: python -m bench.levers --model DIR [--size 1024] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.prompts import prompt
from worker.images import encode_image
from worker.render import RenderRequest
from worker.runtime import Runtime
from worker.text_encoding import encode_prompts


def timed(fn: Callable[[], object], reps: int, warm: int = 1) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    rt = Runtime(a.model, None, "full", "auto", Path("/tmp/zfarm-levers-models"), 1536 * 1536)
    t = time.perf_counter()
    rt.load()
    out: dict[str, object] = {"load_s": round(time.perf_counter() - t, 2), "device": rt.device_name}
    req = RenderRequest(prompt(7), a.size, a.size, a.steps, 0.0, [7])
    images: dict[bool, list] = {}
    for unpadded in (False, True):
        rt.encode_unpadded = unpadded

        def one(unpadded: bool = unpadded) -> None:
            images[unpadded] = rt.render(req)

        out[f"render_s_unpadded_{unpadded}"] = round(timed(one, a.reps), 4)
    diff = np.abs(np.asarray(images[True][0], np.int16) - np.asarray(images[False][0], np.int16))
    out["unpadded_vs_padded_pixels"] = {"max": int(diff.max()), "mean": round(float(diff.mean()), 4)}
    pipe, prompts = rt.pipe, [prompt(7)]
    with torch.inference_mode():
        dev = pipe._execution_device
        out["encode_padded_512_s"] = round(
            timed(lambda: pipe.encode_prompt(list(prompts), dev, do_classifier_free_guidance=False), 10), 5
        )
        out["encode_unpadded_s"] = round(timed(lambda: encode_prompts(pipe, prompts), 10), 5)
        out["prompt_tokens"] = int(encode_prompts(pipe, prompts)[0].shape[0])
    out["png_encode_s"] = round(timed(lambda: encode_image(images[True][0], "png", 95, {"seed": 7}), 3), 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
