"""Tiny LoRA adapters for the tiny transformer, made with PEFT here (no download) and saved as safetensors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from worker.tiny_model import build_tiny_pipeline

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
# PEFT's regex form: attention, feed-forward and the blocks' modulation (the final layer's adaLN.0 is a SiLU).
EVERYWHERE = r".*(attention\.to_(q|k|v|out\.0)|feed_forward\.w[123]|(layers|noise_refiner)\.\d+\.adaLN_modulation\.0)"


def make_tiny_lora(
    path: Path,
    *,
    seed: int = 1,
    rank: int = 4,
    alpha: float = 8.0,
    targets: Sequence[str] | str = EVERYWHERE,
    style: str = "diffusers",
    strength: float = 1.0,
) -> Path:
    """A LoRA adapter for the tiny test transformer with random (non-zero) A and B, written as the named trainer
    writes it: `diffusers` (save_lora_weights: `transformer.` keys + alpha in metadata), `peft` (bare keys, no
    alpha: alpha is the rank), `kohya` (`lora_unet_*` keys with lora_down/lora_up and `.alpha` tensors)."""
    from diffusers import ZImagePipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    transformer = build_tiny_pipeline().transformer
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=targets if isinstance(targets, str) else list(targets),
        init_lora_weights=False,
    )
    transformer.add_adapter(config)
    state = {k: v * strength for k, v in get_peft_model_state_dict(transformer).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if style == "diffusers":
        ZImagePipeline.save_lora_weights(
            path.parent,
            transformer_lora_layers=state,
            weight_name=path.name,
            transformer_lora_adapter_metadata=config.to_dict(),
        )
    elif style == "peft":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif style == "kohya":
        save_file(_kohya(state, alpha), str(path))
    else:
        raise ValueError(f"style must be diffusers, peft or kohya (got {style!r})")
    return path


def _kohya(state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        module, part = key.rsplit(".lora_", 1)
        stem = "lora_unet_" + module.replace(".", "_")
        out[f"{stem}.lora_{'down' if part.startswith('A') else 'up'}.weight"] = value.contiguous()
        out[f"{stem}.alpha"] = torch.tensor(alpha)
    return out


def foreign_lora(path: Path) -> Path:
    """An SDXL-style adapter: its keys name modules the Z-Image transformer does not have."""
    save_file(
        {
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4),
        },
        str(path),
    )
    return path
