"""The LoRA phase of the GPU benchmark: throughput with one adapter against none, and adapter switches between jobs.

Two random rank-R adapters on the attention and feed-forward layers of every block (the layers brand LoRAs are
trained on), built for the model the farm runs (full-size shapes from core/zimage_modules.json, or the tiny model)
and uploaded through the API like any adapter. Then, on the farm that already ran the plain phases (compiled
blocks on a GPU): N jobs without adapters, N jobs with adapter A, N jobs alternating A and B (every job a switch).
From the worker's `zfarm-stats` lines: compiled graphs before and after the adapter jobs (must stay flat) and the
time of each switch (the slot rewritten: from the device cache after each adapter's first use). Images are noise.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from core.lora_keys import module_table

TARGETS = ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0", "feed_forward.w1")
TARGETS += ("feed_forward.w2", "feed_forward.w3")


def make_adapter(path: Path, kind: str, rank: int, seed: int) -> Path:
    """A random LoRA (diffusers keys, bf16, alpha = rank) for every attention and feed-forward layer."""
    gen = torch.Generator("cpu").manual_seed(seed)
    tensors = {}
    for module, (fan_in, fan_out) in module_table(kind).linear.items():
        if module.endswith(TARGETS):
            a = torch.randn(rank, fan_in, generator=gen) / fan_in**0.5
            b = torch.randn(fan_out, rank, generator=gen) * (0.02 / rank**0.5)
            tensors[f"transformer.{module}.lora_A.weight"] = a.to(torch.bfloat16)
            tensors[f"transformer.{module}.lora_B.weight"] = b.to(torch.bfloat16)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


RunJobs = Callable[..., dict[str, Any]]
Stats = Callable[[], list[dict[str, Any]]]


def adapter_phases(
    client: Any, run_jobs: RunJobs, stats: Stats, workdir: Path, kind: str, rank: int, jobs: int, size: tuple[int, int]
) -> dict[str, Any]:
    """Uploads two adapters and runs the three phases; returns their figures and the worker's counters."""
    names = []
    for i, name in enumerate(("bench-style-a", "bench-style-b")):
        path = make_adapter(workdir / f"{name}.safetensors", kind, rank, seed=100 + i)
        client.add_lora(path, name)
        names.append(name)
    before = len(stats())
    w, h = size
    plain = run_jobs(jobs, w, h, first=9000)
    one = run_jobs(jobs, w, h, first=9000 + jobs, loras=lambda i: [{"name": names[0], "scale": 0.8}])
    switching = run_jobs(jobs, w, h, first=9000 + 2 * jobs, loras=lambda i: [{"name": names[i % 2], "scale": 0.8}])
    calls = [x for x in stats()[before:] if not x.get("ready")]
    return {
        "rank": rank,
        "size": f"{w}x{h}",
        "plain": plain,
        "one_adapter": one,
        "switching": switching,
        "one_over_plain": _ratio(one, plain),
        "switching_over_plain": _ratio(switching, plain),
        **switch_figures(calls),
    }


def _ratio(x: dict[str, Any], y: dict[str, Any]) -> float | None:
    return round(x["img_per_s"] / y["img_per_s"], 4) if x.get("img_per_s") and y.get("img_per_s") else None


def switch_figures(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Graphs before/after the adapter jobs and the seconds of each switch (a call whose switch counter moved)."""
    seconds, last = [], None
    for call in calls:
        count = call.get("lora_switches")
        if count is not None and last is not None and count > last:
            seconds.append(call["lora_switch_s"])
        last = count if count is not None else last
    # The first switch to each adapter fetches its file from storage; the rest come from the device cache.
    cached = seconds[2:]
    # Graphs before the first styled job (the call before the switch counter first moved) and after the last.
    first = next((i for i, c in enumerate(calls) if c.get("lora_switches")), None)
    before = calls[first - 1] if first else (calls[0] if calls else None)
    return {
        "graphs_before": before["graphs"] if before else None,
        "graphs_after": calls[-1]["graphs"] if calls else None,
        "switches": len(seconds),
        "first_switches_s": [round(s, 4) for s in seconds[:2]],
        "switch_p50_s": round(statistics.median(cached), 4) if cached else None,
        "switch_max_s": round(max(cached), 4) if cached else None,
    }


def table_rows(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return [f"| LoRA phase | error: {r['error'][:300]} |"]
    rows = []
    for key, label in (("plain", "no adapter"), ("one_adapter", "one adapter"), ("switching", "A/B alternating")):
        ph = r[key]
        rows.append(
            f"| LoRA rank {r['rank']}, {label} ({r['size']}, {ph['succeeded']}/{ph['jobs']} jobs) | "
            f"{ph['img_per_s']} img/s, GPU {ph['gpu_s_per_image']} s/img |"
        )
    ratios = f"{r['one_over_plain']} / {r['switching_over_plain']}"
    rows.append(f"| LoRA: one adapter / none, alternating / none | {ratios} |")
    graphs = f"{r['graphs_before']} / {r['graphs_after']}"
    rows.append(f"| LoRA switches: {r['switches']}; compiled graphs before / after | {graphs} |")
    rows.append(
        f"| LoRA switch time p50 / max (device cache); first two (from storage) | {r['switch_p50_s']} / "
        f"{r['switch_max_s']} s; {r['first_switches_s']} s |"
    )
    return rows
