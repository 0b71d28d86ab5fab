"""Memory policies: how much of the pipeline stays on the card.

`full` keeps everything resident (~20 GiB at 1024x1024 in bf16); `model-offload` moves whole components
in and out per stage (~12 GiB, much slower); `sequential-offload` streams layers (for cards under 12 GiB).
"""

from __future__ import annotations

import logging

import torch
from diffusers import ZImagePipeline

log = logging.getLogger(__name__)
POLICIES = ("full", "model-offload", "sequential-offload")
_GIB = 1024**3
# Thresholds from the measured peaks: full 21.6 GiB, model offload 11.9 GiB at 1024x1024 (anchors.md).
FULL_MIN_FREE_GIB = 24
MODEL_OFFLOAD_MIN_FREE_GIB = 14


def choose_policy(requested: str, device: str) -> str:
    if device == "cpu":
        return "full"  # offload moves weights to the CPU; on a CPU there is nowhere else to go
    if requested != "auto":
        if requested not in POLICIES:
            raise ValueError(f"memory_policy must be one of auto, {', '.join(POLICIES)} (got {requested!r})")
        return requested
    free, _total = torch.cuda.mem_get_info()
    if free >= FULL_MIN_FREE_GIB * _GIB:
        return "full"
    if free >= MODEL_OFFLOAD_MIN_FREE_GIB * _GIB:
        return "model-offload"
    return "sequential-offload"


def apply_policy(pipe: ZImagePipeline, policy: str, device: str) -> None:
    if policy == "full":
        pipe.to(device)
    elif policy == "model-offload":
        pipe.enable_model_cpu_offload(device=device)
    elif policy == "sequential-offload":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        raise ValueError(f"memory_policy must be one of {', '.join(POLICIES)} (got {policy!r})")


def stricter(policy: str) -> str | None:
    """The next policy to try after an out-of-memory error, or None if there is none."""
    order = list(POLICIES)
    i = order.index(policy)
    return order[i + 1] if i + 1 < len(order) else None


def set_vae_tiling(pipe: ZImagePipeline, enabled: bool) -> None:
    if enabled:
        pipe.vae.enable_tiling()
    else:
        pipe.vae.disable_tiling()
