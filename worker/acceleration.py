"""Regional `torch.compile` of the DiT blocks, the compiled VAE decoder, the persistent compile cache, and the
counters the benchmark reads (compiled graphs, VRAM).

The 30 main blocks and 4 refiner blocks of the Z-Image DiT share one class: compiling that class's forward once
(`compile_repeated_blocks`) gives most of a whole-model compile's gain for a fraction of its compile time
(anchors.md: 1.34 s -> 0.93 s per 1024x1024 image on an H200). Shapes change with the image size, the prompt's
token count (in steps of 32) and the batch size, so the blocks are compiled with dynamic shapes: one graph per
kind of call (batch of one or more, with or without a padding mask, refiner with or without modulation), all
compiled during warmup, and none in steady state whatever the size or prompt. `graphs_compiled()` is the
counter that shows it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch._inductor.config
from diffusers import ZImagePipeline
from torch._dynamo.utils import counters

log = logging.getLogger(__name__)
# The shipped presets, warmed after compiling so that the first job of each size pays no kernel compilation.
PRESET_SIZES = ((1024, 1024), (768, 1024), (1024, 768), (512, 512))
# Dynamo's default of 8 cached graphs per code object is near what the block kinds above need; past the limit it
# silently falls back to eager, which would show only as a slow farm.
RECOMPILE_LIMIT = 64


def should_compile(mode: str, device: str, policy: str) -> bool:
    if mode == "off":
        return False
    if policy == "sequential-offload":
        # Layer-by-layer offload hooks sit inside the blocks: a full graph cannot be traced through them.
        if mode == "on":
            log.warning("ZFARM_COMPILE=on ignored under sequential-offload (hooks inside the compiled blocks)")
        return False
    if mode == "on":
        return True
    return device == "cuda" and policy == "full"


def compile_blocks(pipe: ZImagePipeline, backend: str) -> None:
    dynamo = torch._dynamo.config
    if hasattr(dynamo, "recompile_limit"):
        dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
    else:  # torch < 2.6 names it cache_size_limit
        dynamo.cache_size_limit = max(dynamo.cache_size_limit, RECOMPILE_LIMIT)
    pipe.transformer.compile_repeated_blocks(fullgraph=True, dynamic=True, backend=backend)


def compile_vae_decoder(pipe: ZImagePipeline, backend: str) -> None:
    """The VAE decoder compiled, channels_last: 0.087 -> 0.031 s per 1024x1024 decode on an H200 (anchors.md).

    Dynamic shapes from the first call: one graph for every image size (cuDNN runs the convolutions either way;
    what compiling fuses is the GroupNorm + SiLU chains between them), so a new size never compiles in a job.
    """
    pipe.vae.to(memory_format=torch.channels_last)
    pipe.vae.decoder.compile(backend=backend, dynamic=True)


def use_compile_cache(directory: Path) -> None:
    """Inductor's and Triton's caches in the data dir: a second start loads kernels instead of compiling them.

    Read by torch when it compiles, so this must run before the first compile of the process. Dynamo still
    traces at start (seconds); the minutes of kernel compilation and autotuning are what the cache saves.
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(directory / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(directory / "triton"))
    inductor = torch._inductor.config
    inductor.fx_graph_cache = True
    if hasattr(inductor, "autotune_local_cache"):
        inductor.autotune_local_cache = True


def uncompile_blocks(pipe: ZImagePipeline) -> None:
    """Back to eager after a failed compile (blocks and VAE): slower rather than not at all."""
    names = set(getattr(pipe.transformer, "_repeated_blocks", ()))
    for module in pipe.transformer.modules():
        if type(module).__name__ in names:
            module._compiled_call_impl = None
    for module in pipe.vae.modules():
        module._compiled_call_impl = None
    torch._dynamo.reset()


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process; it must not grow in steady state."""
    return int(counters["stats"]["unique_graphs"])


def memory_stats(device: str) -> dict[str, Any]:
    if device != "cuda":
        return {}
    mib = 2**20
    return {
        "max_allocated_mib": torch.cuda.max_memory_allocated() // mib,
        "max_reserved_mib": torch.cuda.max_memory_reserved() // mib,
        "reserved_mib": torch.cuda.memory_reserved() // mib,
        "allocated_mib": torch.cuda.memory_allocated() // mib,
    }
