"""The full-size Z-Image-Turbo shapes with random weights, written with `save_pretrained` for the farm to load.

Same classes and shapes as the published checkpoint (6.15B-parameter DiT, Qwen3-4B text encoder, Flux-style VAE),
so the FLOPs and the memory are the real ones; the weights are random, so every image is noise. Built in bf16
directly on the GPU (seconds) instead of float32 on the CPU (minutes). The tokenizer is word-level over the
benchmark's vocabulary: a prompt of n words costs about n tokens, near what the real Qwen tokenizer gives for
English prompts. With `--tiny`, the farm's tiny test model instead (for the CPU smoke test).

usage: python -m bench.full_model --out DIR [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from diffusers import ZImagePipeline, ZImageTransformer2DModel
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

from bench.prompts import VOCABULARY
from core.tiny_tokenizer import SPECIAL
from worker.tiny_model import CHAT_TEMPLATE, zimage_pipeline, zimage_vae

MARKER = "zfarm-full-random.json"


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate([*SPECIAL, "[UNK]"])}
    for word in sorted(set(VOCABULARY) | {"user", "assistant"}):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    fast.unk_token = "[UNK]"
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_full_pipeline(device: str, dtype: torch.dtype = torch.bfloat16) -> ZImagePipeline:
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = ZImageTransformer2DModel()  # the defaults are the published shapes
            with torch.no_grad():
                transformer.x_pad_token.fill_(1.0)
                transformer.cap_pad_token.fill_(1.0)
            text_encoder = Qwen3Model(
                Qwen3Config(
                    hidden_size=2560,
                    intermediate_size=9728,
                    num_hidden_layers=36,
                    num_attention_heads=32,
                    num_key_value_heads=8,
                    head_dim=128,
                    vocab_size=151936,
                    max_position_embeddings=40960,
                    rope_theta=1000000.0,
                    rms_norm_eps=1e-6,
                    tie_word_embeddings=True,
                )
            )
            vae = zimage_vae(block_out_channels=[128, 256, 512, 512], layers_per_block=2)
    finally:
        torch.set_default_dtype(previous)
    pipe = zimage_pipeline(transformer.to(dtype), text_encoder.to(dtype), vae, build_tokenizer())
    return pipe


def ensure_full_model(directory: Path, device: str) -> dict[str, float]:
    """Build and save once; returns the seconds spent (zeros when the directory was already complete)."""
    if (directory / MARKER).is_file():
        return {"build_s": 0.0, "save_s": 0.0, "reused": 1.0}
    started = time.perf_counter()
    pipe = build_full_pipeline(device)
    if device == "cuda":
        torch.cuda.synchronize()
    built = time.perf_counter()
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipe.save_pretrained(staging)
    saved = time.perf_counter()
    params = {
        name: sum(p.numel() for p in getattr(pipe, name).parameters())
        for name in ("transformer", "text_encoder", "vae")
    }
    (staging / MARKER).write_text(json.dumps({"note": "random weights: noise", "parameters": params}))
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    return {"build_s": built - started, "save_s": saved - built, "bytes": float(size), "reused": 0.0, **params}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    print(json.dumps(ensure_full_model(a.out, a.device)))


if __name__ == "__main__":
    main()
