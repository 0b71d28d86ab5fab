"""LoRA adapters merged into the transformer's own weights: no LoRA path at render time.

A job's adapters (one to three) are written into the weight tensors the transformer already has, in place:
`W = W_base + sum_i scale_i * alpha_i / rank_i * B_i @ A_i`, the sum taken in float32 on the device and rounded
once to the weights' dtype. The tensors keep their identity, dtype, shape and storage, so compiled graphs (which
read the weights as inputs) stay valid and a switch compiles nothing. With fusion on, each module's delta goes to
its rows of the stacked q/k/v or w1/w3 matrix (worker/fusion.py `linear_rows`).

`W_base` is a pristine clone of every weight an adapter may target, made once at install, on the device: a merge
always starts from it (never by subtracting the old adapters: no drift), and a job without adapters gets those
bytes back exactly. The price is the clone's memory (`pristine_bytes`), ~11.5 GiB for Z-Image in bf16.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from core.lora_keys import ModuleTable
from worker.fusion import linear_rows

Weights = dict[str, tuple[torch.Tensor, torch.Tensor]]  # module -> (A, B with alpha/rank folded in)


@dataclass(frozen=True)
class Target:
    linear: nn.Linear
    rows: slice  # the module's rows of `linear.weight`
    pristine: torch.Tensor  # those rows of the weight as loaded (a view into the clone of the whole matrix)


def pristine_bytes(table: ModuleTable, element_size: int) -> int:
    """The pristine copy's size for a transformer with this table, before loading it (the modes are chosen on it)."""
    return sum(fan_in * fan_out for fan_in, fan_out in table.linear.values()) * element_size


class MergedWeights:
    """The transformer's targeted weights, written with a job's adapters merged in, or restored to the base."""

    def __init__(self, transformer: nn.Module, table: ModuleTable) -> None:
        clones: dict[int, torch.Tensor] = {}  # one clone per matrix: a stacked one is shared by its parts
        self.targets: dict[str, Target] = {}
        for name in table.linear:
            linear, rows = linear_rows(transformer, name)
            if id(linear) not in clones:
                clones[id(linear)] = linear.weight.detach().clone()
            self.targets[name] = Target(linear, rows, clones[id(linear)][rows])
        self.bytes = sum(c.numel() * c.element_size() for c in clones.values())
        # Modules whose weights may differ from the base now: a merge rewrites these (to base) and the new ones.
        self.dirty: set[str] = set()

    @torch.no_grad()
    def write(self, adapters: Sequence[tuple[Weights, float]]) -> None:
        """The base weights plus these adapters (each with its scale); the base itself for an empty list."""
        wanted = {m for weights, scale in adapters if scale != 0 for m in weights}
        # Marked before writing: a write that fails half way leaves them to be rewritten by the next one.
        self.dirty |= wanted
        for name in sorted(self.dirty):
            target = self.targets[name]
            dest = target.linear.weight.data[target.rows]  # a view: the same storage the graphs read
            parts = [(weights[name], scale) for weights, scale in adapters if scale != 0 and name in weights]
            if not parts:
                dest.copy_(target.pristine)  # exactly the base: no arithmetic on the way back
                continue
            merged = target.pristine.to(device=dest.device, dtype=torch.float32, copy=True)
            for (a, b), scale in parts:
                merged.addmm_(b.to(merged.device, torch.float32), a.to(merged.device, torch.float32), alpha=scale)
            dest.copy_(merged)  # rounded once, to the weight's dtype
        self.dirty = wanted
