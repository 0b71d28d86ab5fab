"""The `tiny` model: a random Z-Image pipeline built from the real classes, saved to disk, loaded back.

It runs on a CPU in milliseconds and makes noise, never a real picture. It keeps the real model's
geometry where sizes matter (a 4-block VAE that downsamples by 8, RoPE axes that cover 2048 px), so a
size that works in production also works in tests.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

from core.tiny_tokenizer import build_raw_tokenizer

TINY_VERSION = "tiny-v1"
_MARKER = "zfarm-tiny.json"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_raw_tokenizer(), pad_token="<|endoftext|>", eos_token="<|im_end|>", unk_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def zimage_vae(block_out_channels: list[int], layers_per_block: int) -> AutoencoderKL:
    """Z-Image's Flux-style VAE: 16 latent channels, 4 blocks (downsampling by 8) and the checkpoint's scaling
    and shift. The tiny and the full-size builds share it and differ only in width and depth."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        norm_num_groups=32,
        sample_size=1024,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
        block_out_channels=block_out_channels,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=layers_per_block,
    )


def zimage_pipeline(
    transformer: ZImageTransformer2DModel,
    text_encoder: Qwen3Model,
    vae: AutoencoderKL,
    tokenizer: PreTrainedTokenizerFast,
) -> ZImagePipeline:
    """Assembles the pipeline with Turbo's scheduler (flow matching, shift 3)."""
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )


def build_tiny_pipeline(seed: int = 0) -> ZImagePipeline:
    torch.manual_seed(seed)
    transformer = ZImageTransformer2DModel(
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=16,
        axes_dims=[8, 4, 4],
        axes_lens=[1024, 512, 512],
    )
    with torch.no_grad():
        transformer.x_pad_token.fill_(1.0)
        transformer.cap_pad_token.fill_(1.0)
    text_encoder = Qwen3Model(
        Qwen3Config(
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            vocab_size=512,
            max_position_embeddings=1024,
        )
    )
    vae = zimage_vae(block_out_channels=[32, 32, 32, 32], layers_per_block=1)
    return zimage_pipeline(transformer, text_encoder, vae, build_tokenizer())


def _is_complete(directory: Path) -> bool:
    marker = directory / _MARKER
    return marker.is_file() and json.loads(marker.read_text()).get("version") == TINY_VERSION


def ensure_tiny_model(directory: Path) -> Path:
    """Build and save the tiny pipeline once; later calls, and other worker processes, reuse it."""
    if _is_complete(directory):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    # Each process builds in its own staging directory and renames it into place: several workers
    # starting at once never see or write each other's half-saved files.
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        build_tiny_pipeline().save_pretrained(staging)
        (staging / _MARKER).write_text(json.dumps({"version": TINY_VERSION, "note": "random weights: noise"}))
        if directory.exists() and not _is_complete(directory):
            shutil.rmtree(directory, ignore_errors=True)  # left half-built by an older, interrupted version
        try:
            staging.rename(directory)
        except OSError:
            if not _is_complete(directory):  # lost the race to a process whose copy is complete: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory
