"""The full-size random model's builder imports and assembles the published shapes (on the meta device: no memory)."""

from __future__ import annotations

import torch

from bench.full_model import build_full_pipeline


def test_full_size_pipeline_has_the_published_shapes() -> None:
    pipe = build_full_pipeline("meta")
    dit = sum(p.numel() for p in pipe.transformer.parameters())
    encoder = sum(p.numel() for p in pipe.text_encoder.parameters())
    assert 6.0e9 < dit < 6.3e9  # the 6.15B-parameter DiT
    assert 3.9e9 < encoder < 4.1e9  # Qwen3-4B without its head (tied embeddings)
    assert pipe.vae.config.latent_channels == 16 and list(pipe.vae.config.block_out_channels) == [128, 256, 512, 512]
    assert next(pipe.transformer.parameters()).dtype == torch.bfloat16
    assert pipe.tokenizer.apply_chat_template([{"role": "user", "content": "red mug"}], tokenize=False)
