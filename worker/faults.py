"""Fault injection at the pipeline boundary, for fault tests and the chaos benchmark.

Off unless ZFARM_FAULT_INJECTION=1 (the worker says so loudly at start). A marker in the prompt picks
the fault: `[[fault:kill]]` kills the worker process, `[[fault:oom]]` / `[[fault:oom-once]]` raise CUDA
out-of-memory always / on the first try, `[[fault:nan]]` / `[[fault:nan-once]]` /
`[[fault:nan-twice]]` make NaN pixels (always / on the first try / on the first two),
`[[fault:hang]]` never returns (until the soft time limit), `[[fault:hang-hard]]` ignores the soft limit
too (as a stuck CUDA kernel would), so only the hard limit's kill ends it.
"""

from __future__ import annotations

import os
import re
import signal
import time

import torch

_MARKER = re.compile(r"\[\[fault:([a-z-]+)\]\]")
KNOWN = {"kill", "oom", "oom-once", "nan", "nan-once", "nan-twice", "hang", "hang-hard"}


def fault_in(prompt: str) -> str | None:
    match = _MARKER.search(prompt)
    if match is None:
        return None
    if match.group(1) not in KNOWN:
        raise ValueError(f"unknown fault {match.group(1)!r}; known: {', '.join(sorted(KNOWN))}")
    return match.group(1)


def before_render(fault: str | None, try_index: int) -> None:
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "oom" or (fault == "oom-once" and try_index == 0):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected fault)")
    if fault == "hang-hard":
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # Celery's soft limit arrives as SIGUSR1
        while True:
            time.sleep(0.1)
    if fault == "hang":
        while True:  # sleeps in short slices so the soft time limit's signal can interrupt it
            time.sleep(0.1)


def corrupt_output(fault: str | None, try_index: int, pixels: torch.Tensor) -> torch.Tensor:
    if fault == "nan" or (fault == "nan-once" and try_index == 0) or (fault == "nan-twice" and try_index <= 1):
        return torch.full_like(pixels, float("nan"))
    return pixels
