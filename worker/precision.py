"""The FP8 tier: which layers run in FP8, whether this machine can run them, and the conversion.

`ZFARM_PRECISION=fp8` quantizes the linear layers of the 30 main DiT blocks to FP8 with rowwise scales (torchao
`Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())`: one scale per weight row and per activation
row, computed at run time). Everything else stays bf16: the adaLN modulation, the 4 refiner blocks, the embedders,
the final layer, the text encoder and the VAE. Per-tensor scales are not offered: one scale per tensor cannot
hold Z-Image's MLP activations (up to ~6.6e4) and the images turn to noise (anchors.md).

A worker asked for fp8 that cannot run it (no FP8 tensor cores: compute capability < 8.9; no torchao) refuses to
start with the reason; it never falls back to bf16 silently, since its jobs would be labelled fp8 and be bf16.
FP8 trades exactness for speed: images differ from bf16 ones (BENCHMARKS.md gives the drift measured with random
weights) and must be checked on the real checkpoint before production use.
"""

from __future__ import annotations

from torch import nn

from core.queues import PRECISIONS, Precision
from worker.fp8_support import PrecisionUnavailable, fp8_problem

__all__ = ["PRECISIONS", "Precision", "PrecisionUnavailable", "fp8_problem", "fp8_targets", "quantize_fp8"]
MAIN_BLOCKS = "layers."  # the 30 main blocks; noise_refiner/context_refiner are named otherwise


def is_fp8_target(module: nn.Module, fqn: str) -> bool:
    """A linear layer of a main block, except its adaLN modulation; dimensions the FP8 GEMM accepts (16s).
    Arguments in the order torchao's `quantize_(filter_fn=...)` passes them: module, then its qualified name."""
    if not isinstance(module, nn.Linear) or not fqn.startswith(MAIN_BLOCKS) or "adaLN" in fqn:
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def fp8_targets(transformer: nn.Module) -> list[str]:
    return [fqn for fqn, module in transformer.named_modules() if is_fp8_target(module, fqn)]


def quantize_fp8(transformer: nn.Module) -> int:
    """Quantizes the targets in place (CUDA only); returns how many layers were converted."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    targets = fp8_targets(transformer)
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    quantize_(transformer, config, filter_fn=is_fp8_target)
    converted = [fqn for fqn, m in transformer.named_modules() if fqn in targets and _is_float8(m.weight)]
    if len(converted) != len(targets):  # never label bf16 weights as fp8
        raise PrecisionUnavailable(f"FP8 conversion reached {len(converted)} of {len(targets)} layers")
    return len(converted)


def _is_float8(weight: object) -> bool:
    # torchao's Float8Tensor keeps its FP8 payload in `qdata`; its own dtype reads as the logical bf16.
    qdata = getattr(weight, "qdata", None)
    names = {type(weight).__name__, type(getattr(weight, "data", weight)).__name__}
    return "float8" in str(getattr(qdata, "dtype", "")) or any("Float8" in n for n in names)
