"""Whether this machine can run the FP8 tier, asked without importing torch or touching CUDA.

`zfarm worker` asks in its parent process, before Celery forks the child that renders: that parent must not
initialise CUDA (worker/tasks.py says why), so the GPU's compute capability comes from nvidia-smi here, and the
child asks torch again before it loads anything (worker/runtime.py).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess

FP8_MIN_CAPABILITY = (8, 9)  # Ada and Hopper: the first with FP8 tensor cores


class PrecisionUnavailable(RuntimeError):
    """This worker was asked for a precision its machine cannot run."""


def fp8_problem(device: str, capability: tuple[int, int] | None) -> str | None:
    """Why this machine cannot run the FP8 tier, or None. `capability` is the GPU's (None: no GPU seen)."""
    if importlib.util.find_spec("torchao") is None:
        return "ZFARM_PRECISION=fp8 needs torchao (pip install 'zfarm[fp8]'); it is not installed"
    if device == "cpu" or capability is None:
        return "ZFARM_PRECISION=fp8 needs an NVIDIA GPU with FP8 tensor cores (compute capability >= 8.9); none is used"
    if capability < FP8_MIN_CAPABILITY:
        major, minor = capability
        return (
            f"ZFARM_PRECISION=fp8 needs FP8 tensor cores (compute capability >= 8.9); this GPU has {major}.{minor}: "
            "run it with ZFARM_PRECISION=bf16"
        )
    return None


def _smi_first_gpu(query: str) -> str | None:
    """One nvidia-smi field of the first visible GPU (None: no nvidia-smi, no answer): the worker's parent asks
    nvidia-smi, never CUDA, so that its forked children can still start CUDA."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
    try:
        out = subprocess.run(
            [smi, f"--id={first}", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.split()
    except (subprocess.SubprocessError, OSError):
        return None
    return out[0] if out else None


def smi_capability() -> tuple[int, int] | None:
    """The first visible GPU's compute capability through nvidia-smi: the worker's parent must not touch CUDA."""
    answer = _smi_first_gpu("compute_cap")
    if answer is None:
        return None
    major, _, minor = answer.partition(".")
    return (int(major), int(minor or 0)) if major.isdigit() else None


def smi_total_mib() -> int | None:
    """The first visible GPU's memory in MiB through nvidia-smi (None: no GPU seen), for the worker's parent."""
    answer = _smi_first_gpu("memory.total")
    return int(answer) if answer and answer.isdigit() else None
