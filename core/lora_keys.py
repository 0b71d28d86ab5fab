"""LoRA adapter files for the Z-Image transformer, read without torch: which module each key names, and how much.

The API checks uploads with this (it never imports torch) and the worker builds the adapter it loads from the
same parse, so what was accepted is exactly what renders. Key formats accepted, those that trainers for
Z-Image write and diffusers' ZImageLoraLoaderMixin reads:

- diffusers / PEFT: `[transformer.|diffusion_model.|base_model.model.]MODULE.lora_A[.default].weight` and
  `lora_B`, optionally `MODULE.alpha`;
- Kohya (sd-scripts, ai-toolkit): `lora_unet_MODULE_WITH_UNDERSCORES.lora_down.weight` and `lora_up`, or
  `[diffusion_model.]MODULE.lora_down.weight`, with `.alpha`.

MODULE must be a linear layer of diffusers' ZImageTransformer2DModel (core/zimage_modules.json, generated from
the class and checked against it by a test). The effect of a module is `scale * alpha / rank * B @ A`; alpha
comes from the module's `.alpha` key, else the file's diffusers metadata (`lora_alpha`, `alpha_pattern`), else
it equals the rank.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

MAX_RANK = 256
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
TABLE_FILE = Path(__file__).with_name("zimage_modules.json")
METADATA_KEY = "lora_adapter_metadata"  # where diffusers' save_lora_weights writes the adapter's config
Part = Literal["A", "B", "alpha"]

_SUFFIXES: tuple[tuple[str, Part], ...] = (
    (".lora_A.weight", "A"),
    (".lora_A.default.weight", "A"),
    (".lora_down.weight", "A"),
    (".lora_B.weight", "B"),
    (".lora_B.default.weight", "B"),
    (".lora_up.weight", "B"),
    (".alpha", "alpha"),
)
_PREFIXES = ("transformer.", "diffusion_model.", "base_model.model.")
_KOHYA = "lora_unet_"


class AdapterProblem(ValueError):
    """A file that is not a LoRA adapter for this transformer; `key` names the first tensor that does not fit."""

    def __init__(self, rule: str, key: str | None = None) -> None:
        super().__init__(f"{key}: {rule}" if key else rule)
        self.rule, self.key = rule, key


@dataclass(frozen=True)
class ModuleTable:
    """The transformer's linear modules by full name, with (in_features, out_features)."""

    kind: str
    linear: Mapping[str, tuple[int, int]]
    kohya: Mapping[str, str]  # `layers_0_attention_to_q` -> `layers.0.attention.to_q`


@lru_cache(maxsize=4)
def module_table(kind: str) -> ModuleTable:
    """`z-image` (the published shapes) or `tiny` (the test model)."""
    model = json.loads(TABLE_FILE.read_text())["models"][kind]
    linear: dict[str, tuple[int, int]] = {}
    for pattern, (fan_in, fan_out) in model["linear"].items():
        block = pattern.split(".", 1)[0]
        count = model["blocks"][block] if "{n}" in pattern else 1
        names = [pattern.replace("{n}", str(i)) for i in range(count)]
        linear.update({name: (fan_in, fan_out) for name in names})
    return ModuleTable(kind, linear, {name.replace(".", "_"): name for name in linear})


def table_for(model: str) -> ModuleTable:
    return module_table("tiny" if model == "tiny" else "z-image")


def parse_key(key: str, table: ModuleTable) -> tuple[str, Part]:
    """(module, part) that a tensor's key names; AdapterProblem when it names none."""
    matched = next(((suffix, part) for suffix, part in _SUFFIXES if key.endswith(suffix)), None)
    if matched is None:
        rule = "is not a LoRA tensor (names end in lora_A/lora_B/lora_down/lora_up.weight or .alpha)"
        raise AdapterProblem(rule, key)
    suffix, part = matched
    base = key[: -len(suffix)]
    if base.startswith(_KOHYA):
        module = table.kohya.get(base[len(_KOHYA) :])
    else:
        module = next((base[len(p) :] for p in _PREFIXES if base.startswith(p)), base)
    if module is None or module not in table.linear:
        raise AdapterProblem("names no linear module of the Z-Image transformer (an adapter for another model?)", key)
    return module, part


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter file holds: per module its rank and its scaling (alpha / rank)."""

    ranks: Mapping[str, int]
    scalings: Mapping[str, float]
    alpha: float
    keys: Mapping[str, tuple[str, Part]]  # each tensor key -> (module, part)

    @property
    def rank(self) -> int:
        return max(self.ranks.values())

    @property
    def targets(self) -> list[str]:
        """Module patterns it touches: `layers.*.attention.to_q` for any block."""
        return sorted({re.sub(r"^(layers|noise_refiner|context_refiner)\.\d+\.", r"\1.*.", m) for m in self.ranks})


def describe(
    tensors: Mapping[str, TensorInfo],
    alphas: Mapping[str, float],
    metadata: Mapping[str, str] | None,
    table: ModuleTable,
    max_rank: int = MAX_RANK,
) -> AdapterInfo:
    """Checks every tensor against the table; `alphas` holds the values of the `.alpha` tensors by key."""
    if not tensors:
        raise AdapterProblem("the file holds no tensors")
    keys = {key: parse_key(key, table) for key in tensors}
    found: dict[tuple[str, Part], str] = {}
    for key, where in keys.items():
        if where in found:
            raise AdapterProblem(f"names the same tensor as {found[where]!r}", key)
        found[where] = key
    ranks: dict[str, int] = {}
    module_alphas: dict[str, float] = {}
    for (module, part), key in sorted(found.items()):
        info = tensors[key]
        if info.dtype not in FLOAT_DTYPES:
            raise AdapterProblem(f"has dtype {info.dtype}; LoRA tensors are F16, BF16, F32 or F64", key)
        if part == "alpha":
            if info.shape not in ((), (1,)):
                raise AdapterProblem(f"an alpha is one number (got shape {list(info.shape)})", key)
            module_alphas[module] = float(alphas[key])
            continue
        if part == "A":
            ranks[module] = _check_pair(module, key, found, tensors, table, max_rank)
    for module, part in found:
        if part != "A" and module not in ranks:
            raise AdapterProblem(f"has no lora_A/lora_down tensor for module {module}", found[(module, part)])
    file_alpha, patterns = _metadata_alphas(metadata)
    scalings = {}
    for module, rank in ranks.items():
        alpha = module_alphas.get(module, _pattern_alpha(module, patterns, file_alpha))
        scalings[module] = (alpha if alpha is not None else rank) / rank
    common = Counter(module_alphas.values()).most_common(1)
    alpha = file_alpha if file_alpha is not None else (common[0][0] if common else float(max(ranks.values())))
    return AdapterInfo(ranks, scalings, alpha, keys)


def _check_pair(
    module: str,
    key: str,
    found: Mapping[tuple[str, Part], str],
    tensors: Mapping[str, TensorInfo],
    table: ModuleTable,
    max_rank: int,
) -> int:
    fan_in, fan_out = table.linear[module]
    down = tensors[key].shape
    up_key = found.get((module, "B"))
    if up_key is None:
        raise AdapterProblem(f"has no matching lora_B/lora_up tensor for module {module}", key)
    up = tensors[up_key].shape
    if len(down) != 2 or down[1] != fan_in:
        raise AdapterProblem(f"must have shape [rank, {fan_in}] for {module} (got {list(down)})", key)
    rank = down[0]
    if up != (fan_out, rank):
        raise AdapterProblem(f"must have shape [{fan_out}, {rank}] for {module} (got {list(up)})", up_key)
    if not 1 <= rank <= max_rank:
        raise AdapterProblem(f"has rank {rank}; the farm takes ranks 1 to {max_rank}", key)
    return rank


def _metadata_alphas(metadata: Mapping[str, str] | None) -> tuple[float | None, dict[str, float]]:
    """diffusers' save_lora_weights keeps the config as JSON, keys prefixed with `transformer.`."""
    raw = (metadata or {}).get(METADATA_KEY)
    if not raw:
        return None, {}
    try:
        config = {k.removeprefix("transformer."): v for k, v in json.loads(raw).items()}
        alpha = config.get("lora_alpha")
        patterns = {str(k): float(v) for k, v in (config.get("alpha_pattern") or {}).items()}
        return (float(alpha) if alpha is not None else None), patterns
    except (ValueError, TypeError, AttributeError) as exc:
        raise AdapterProblem(f"the file's {METADATA_KEY} metadata is not a LoRA config: {exc}") from exc


def _pattern_alpha(module: str, patterns: Mapping[str, float], default: float | None) -> float | None:
    # PEFT's rule (peft.utils.other.get_pattern_key): a pattern matches a module name or its dotted suffix.
    for pattern, alpha in patterns.items():
        if re.match(rf"(.*\.)?({pattern.lstrip('^')})$", module):
            return alpha
    return default
