"""The `tiny` model: a random Z-Image pipeline built from the real classes, saved to disk, loaded back.

It runs on a CPU in milliseconds and makes noise, never a real picture. It keeps the real model's
geometry where sizes matter (a 4-block VAE that downsamples by 8, RoPE axes that cover 2048 px), so a
size that works in production also works in tests.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

from zfarm.tiny_tokenizer import build_raw_tokenizer

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
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        norm_num_groups=32,
        sample_size=1024,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
        block_out_channels=[32, 32, 32, 32],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1,
    )
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_tokenizer(),
        transformer=transformer,
    )


def ensure_tiny_model(directory: Path) -> Path:
    """Build and save the tiny pipeline once; later calls reuse what is on disk.

    Several workers may start at once on one data directory: each builds in a staging directory of its
    own, and the first to finish moves it into place; the others drop theirs and load the winner's.
    """
    if _complete(directory):
        return directory
    staging = directory.with_name(f"{directory.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    build_tiny_pipeline().save_pretrained(staging)
    (staging / _MARKER).write_text(json.dumps({"version": TINY_VERSION, "note": "random weights: noise"}))
    if not _complete(directory):
        shutil.rmtree(directory, ignore_errors=True)  # an older version or a half-written copy
        try:
            staging.rename(directory)
        except OSError:
            if not _complete(directory):  # not a lost race: a real failure
                raise
    shutil.rmtree(staging, ignore_errors=True)
    return directory


def _complete(directory: Path) -> bool:
    marker = directory / _MARKER
    try:
        return marker.is_file() and json.loads(marker.read_text()).get("version") == TINY_VERSION
    except (OSError, ValueError):
        return False
