"""Fewer, larger kernels in the Z-Image DiT blocks: fused projections and a real-valued RoPE.

Three rewrites of the diffusers modules, the same function computed (float32 on a CPU: ~1e-6 apart):
- q, k and v come from one `to_qkv` matrix (the three weights stacked) and w1, w3 of the SwiGLU from one `w13`:
  one GEMM instead of three (two) over the same input, and under FP8 one activation quantization instead of
  three (two). Rowwise FP8 scales are per output row, so a stacked weight gets the scales its parts had.
- RoPE as real arithmetic on (cos, sin) pairs instead of `view_as_complex` products: Inductor cannot fuse
  complex ops (it calls them eagerly, one kernel each); in real form the qk RMSNorm, the rotation and the cast
  back to bf16 become one fused kernel (SGLang measured the unfused chain at ~12 % of a step on an H200).
- The rotary table is kept real too (`RealRopeEmbedder`), so no complex tensor enters the compiled blocks.

Applied to every block (the 30 main ones and the 4 refiners): the class is compiled once for all of them.
The module names `to_q`/`to_k`/`to_v`/`w1`/`w3` are gone afterwards: LoRA adapters merged into the weights find
their rows in the stacked matrices (`linear_rows`); the PEFT adapter slot wraps the named modules, so with the
slot fusing stays off (worker/adapters.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ZImageTransformer2DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_z_image import RopeEmbedder
from torch import nn


class RealRopeEmbedder:
    """Z-Image's `RopeEmbedder` returning (..., dim/2, 2) float32 (cos, sin) pairs instead of complex64."""

    def __init__(self, inner: RopeEmbedder) -> None:
        self.inner = inner
        self.tables: list[torch.Tensor] | None = None

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tables is None or self.tables[0].device != ids.device:
            inner = self.inner
            tables = inner.precompute_freqs_cis(inner.axes_dims, inner.axes_lens, theta=inner.theta)
            self.tables = [torch.view_as_real(t).to(ids.device) for t in tables]
        return torch.cat([table[ids[:, i]] for i, table in enumerate(self.tables)], dim=-2)


def apply_real_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x: (batch, seq, heads, head_dim); freqs: (batch, seq, head_dim/2, 2). The complex product, in reals."""
    pairs = x.float().unflatten(-1, (-1, 2))
    f = freqs.unsqueeze(2)
    cos, sin = f[..., 0], f[..., 1]
    x0, x1 = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return rotated.flatten(3).type_as(x)


class FusedZImageAttnProcessor:
    """`ZSingleStreamAttnProcessor` with a stacked qkv projection and real-valued RoPE."""

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        freqs_cis: torch.Tensor | None = None,
    ) -> torch.Tensor:
        heads = attn.heads
        query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        query, key, value = (t.unflatten(-1, (heads, -1)) for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if freqs_cis is not None:
            query, key = apply_real_rope(query, freqs_cis), apply_real_rope(key, freqs_cis)
        if attention_mask is not None and attention_mask.ndim == 2:
            attention_mask = attention_mask[:, None, None, :]
        out = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=0.0,
            is_causal=False,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        out = out.flatten(2, 3).to(query.dtype)
        return attn.to_out[0](out)


class FusedFeedForward(nn.Module):
    """Z-Image's SwiGLU feed-forward, w2(silu(w1 x) * w3 x), with w1 and w3 stacked into one matrix."""

    def __init__(self, w13: nn.Linear, w2: nn.Linear) -> None:
        super().__init__()
        self.w13, self.w2 = w13, w2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


# Stacked matrix -> the projections it holds, in the order their rows are stacked (`fuse_block`).
STACKS = {"to_qkv": ("to_q", "to_k", "to_v"), "w13": ("w1", "w3")}


def linear_rows(transformer: nn.Module, name: str) -> tuple[nn.Linear, slice]:
    """The Linear that computes the module named `name` (a diffusers name, e.g. `layers.0.attention.to_k`) and
    the rows of its weight that are that module's: all of them, or its block of a stacked matrix once fused."""
    parent_name, _, leaf = name.rpartition(".")
    parent = transformer.get_submodule(parent_name) if parent_name else transformer
    for stacked, parts in STACKS.items():
        if leaf in parts and not hasattr(parent, leaf) and isinstance(getattr(parent, stacked, None), nn.Linear):
            linear = getattr(parent, stacked)
            size, rest = divmod(linear.out_features, len(parts))
            if rest:
                rows = linear.out_features
                raise ValueError(f"{parent_name}.{stacked} has {rows} rows: not {len(parts)} equal parts")
            i = parts.index(leaf)
            return linear, slice(i * size, (i + 1) * size)
    module = transformer.get_submodule(name)
    if not isinstance(module, nn.Linear):
        raise ValueError(f"{name} is a {type(module).__name__}, not a linear layer")
    return module, slice(0, module.out_features)


def stacked_linear(parts: list[nn.Linear]) -> nn.Linear:
    """One bias-free Linear whose output is the parts' outputs side by side."""
    if any(p.bias is not None for p in parts):
        raise ValueError("only bias-free projections are stacked (Z-Image's q, k, v, w1 and w3 have none)")
    first = parts[0].weight
    fused = nn.Linear(
        first.shape[1], sum(p.weight.shape[0] for p in parts), bias=False, device=first.device, dtype=first.dtype
    )
    with torch.no_grad():
        fused.weight.copy_(torch.cat([p.weight for p in parts], dim=0))
    return fused


def fuse_block(block: nn.Module) -> None:
    attn = block.attention
    attn.to_qkv = stacked_linear([attn.to_q, attn.to_k, attn.to_v])
    del attn.to_q, attn.to_k, attn.to_v  # the stacked copy replaces them: no second set of weights in memory
    attn.set_processor(FusedZImageAttnProcessor())
    ff = block.feed_forward
    block.feed_forward = FusedFeedForward(stacked_linear([ff.w1, ff.w3]), ff.w2)


def fuse_transformer(transformer: ZImageTransformer2DModel) -> int:
    """Fuses every DiT block in place, before compiling; returns how many blocks were fused."""
    if is_fused(transformer):
        return 0
    blocks = [*transformer.noise_refiner, *transformer.context_refiner, *transformer.layers]
    for block in blocks:
        fuse_block(block)
        if transformer.device.type == "cuda":
            torch.cuda.empty_cache()  # hand back each block's old weights as we go: the peak stays one block up
    transformer.rope_embedder = RealRopeEmbedder(transformer.rope_embedder)
    return len(blocks)


def is_fused(transformer: ZImageTransformer2DModel) -> bool:
    return isinstance(transformer.rope_embedder, RealRopeEmbedder)
