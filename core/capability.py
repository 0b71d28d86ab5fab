"""What a worker's card can take: the largest image (pixels) it renders, from its VRAM or its setting.

Measured needs (Z-Image-Turbo bf16, `full` memory policy, batch 1, one H200; /work/shared/docs/anchors.md and
BENCHMARKS.md): 19.8 GiB peak at 512x512, 21.0 GiB at 1024x768, 21.6 GiB at 1024x1024 (21.69 GiB through the
farm), 28.7 GiB at 2048x2048. So a 24 GiB card renders up to 1024x1024 (ZFARM_LARGE_PIXELS, the default split)
and anything larger needs a card of 32 GiB or more (28.7 GiB plus the CUDA context and allocator slack). Cards
under 24 GiB run an offload policy (11.9 GiB peak at 1024x1024 with model offload) and are kept to the same
1024x1024 budget: nothing larger was measured on them.
"""

from __future__ import annotations

from core.settings import FarmSettings

LARGE_CARD_MIB = 32 * 1024  # 2048x2048 peaks at 28.7 GiB; below 32 GiB a card takes at most the large budget


def worker_max_pixels(settings: FarmSettings, vram_mib: int | None) -> int:
    """Pixels per image this worker takes: its setting, else by VRAM (None: no GPU, so no VRAM bound)."""
    if settings.worker_max_pixels is not None:
        return settings.worker_max_pixels
    if vram_mib is None or vram_mib >= LARGE_CARD_MIB:
        return settings.max_pixels
    return min(settings.large_pixels, settings.max_pixels)


def takes_large(max_pixels: int, large_pixels: int) -> bool:
    return max_pixels > large_pixels
