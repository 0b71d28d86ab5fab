"""Counting GPUs without touching CUDA: the farm's parent process must never initialise it."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: str  # what CUDA_VISIBLE_DEVICES takes for this card
    name: str
    memory_mib: int


def visible_gpus() -> list[Gpu]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        index, name, mem = (part.strip() for part in line.split(","))
        gpus.append(Gpu(index=index, name=name, memory_mib=int(float(mem))))
    allowed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if allowed is not None:
        keep = [p.strip() for p in allowed.split(",") if p.strip()]
        gpus = [g for g in gpus if g.index in keep]
    return gpus
