"""LoRA adapters on a worker: files cached on local disk, the last few on the device, applied in one of two modes.

merge (the default under the memory policy `full`): a job's adapters are added into the transformer's weights in
place, from a pristine copy of them, and a job without adapters gets the copy back (worker/merged_weights.py).
Rendering then costs what it costs without adapters, and the DiT blocks can stay fused. The copy takes as much
device memory as the targeted weights, so under the offload policies the slot below is used instead.

slot: the slot is one PEFT LoRA adapter (`SLOT`) on every linear module of the transformer, of rank
ZFARM_LORA_SLOT_RANK, installed before the blocks are compiled with diffusers' `enable_lora_hotswap`. A job's
adapters (one to three) are written into it together: their ranks concatenated, each one's `scale * alpha /
rank` folded into its B matrix, so the slot's own scaling stays 1 and `B @ A` is their sum. Writing is diffusers'
hotswap (`load_lora_weights(..., adapter_name=SLOT, hotswap=True)`): a copy into tensors of fixed shape, so the
compiled graphs stay valid and a switch compiles nothing. Per-adapter scales through `set_adapters` would not
do: PEFT's `set_scale` replaces the tensor scaling with a Python float, which a compiled graph guards on.

Between jobs the slot is disabled (`disable_lora`): the transformer runs its base layers only, exactly as a
worker that never saw an adapter, so no job sees another's style. Two graphs per kind of call exist, slot on and
slot off, both compiled during warmup.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.lora_keys import ModuleTable, TensorInfo, describe, table_for
from core.settings import FarmSettings
from core.storage import Storage, StorageError, lora_key
from models import Worker
from models.db import transaction
from models.loras import signature
from worker.merged_weights import MergedWeights, Weights

log = logging.getLogger(__name__)
SLOT = "zfarm_slot"
_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64"}
MODES = ("merge", "slot")


class AdapterUnavailable(ValueError):
    """The adapter's file is missing from storage or is not the file the job was submitted with."""


@dataclass
class AdapterFiles:
    """Adapter files on this worker's disk, fetched from storage by key and checked against their sha256."""

    storage: Storage
    directory: Path
    max_bytes: int

    def path(self, sha256: str) -> Path:
        local = self.directory / f"{sha256}.safetensors"
        if local.is_file():
            os.utime(local)  # most recently used: evicted last
            return local
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".fetch-")
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, self.storage.open(lora_key(sha256)) as src:
                while chunk := src.read(1024 * 1024):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise AdapterUnavailable(f"adapter file {sha256} in storage has sha256 {digest.hexdigest()}")
            os.replace(tmp, local)
        except FileNotFoundError as exc:
            raise AdapterUnavailable(f"adapter file {sha256} is not in storage (deleted?)") from exc
        except StorageError as exc:  # the bucket refused or did not answer: the job fails with why
            raise AdapterUnavailable(f"adapter file {sha256} could not be read: {exc}") from exc
        finally:
            Path(tmp).unlink(missing_ok=True)
        self._evict(keep=local)
        return local

    def _evict(self, keep: Path) -> None:
        files = sorted(self.directory.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for old in files:
            if total <= self.max_bytes:
                break
            if old != keep:
                total -= old.stat().st_size
                old.unlink(missing_ok=True)


def read_weights(path: Path, table: ModuleTable, device: str, dtype: torch.dtype) -> Weights:
    """An adapter file as (A, B) per module, parsed as the API checked it (core/lora_keys.py); never unpickled."""
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    infos = {k: TensorInfo(tuple(t.shape), _DTYPES.get(t.dtype, str(t.dtype))) for k, t in tensors.items()}
    alphas = {k: float(t.reshape(-1)[0]) for k, t in tensors.items() if k.endswith(".alpha")}
    info = describe(infos, alphas, metadata, table)
    by_part = {where: tensors[key] for key, where in info.keys.items()}
    return {
        module: (
            by_part[(module, "A")].to(device=device, dtype=dtype),
            (by_part[(module, "B")].double() * info.scalings[module]).to(device=device, dtype=dtype),
        )
        for module in info.ranks
    }


def combined_state_dict(adapters: Sequence[tuple[Weights, float]]) -> dict[str, torch.Tensor]:
    """One LoRA whose `B @ A` is the sum of `scale * B_i @ A_i`: ranks concatenated, zero-padded to one rank."""
    modules = sorted({m for weights, _ in adapters for m in weights})
    parts = {
        m: [(w[m][0], w[m][1] if scale == 1 else w[m][1] * scale) for w, scale in adapters if m in w] for m in modules
    }
    rank = max(sum(a.shape[0] for a, _ in pairs) for pairs in parts.values())
    out: dict[str, torch.Tensor] = {}
    # A switch is a few tensor operations per module (hundreds of modules at full size): none that is not needed.
    for module, pairs in parts.items():
        a = pairs[0][0] if len(pairs) == 1 else torch.cat([a for a, _ in pairs])
        b = pairs[0][1] if len(pairs) == 1 else torch.cat([b for _, b in pairs], dim=1)
        if (pad := rank - a.shape[0]) > 0:
            # One rank for every module keeps diffusers' config at lora_alpha == r: the slot's scaling stays 1.
            a, b = torch.nn.functional.pad(a, (0, 0, 0, pad)), torch.nn.functional.pad(b, (0, pad))
        out[f"transformer.{module}.lora_A.weight"] = a
        out[f"transformer.{module}.lora_B.weight"] = b
    return out


@dataclass
class AdapterLibrary:
    """The adapters of one worker process: disk cache, device cache (LRU), and the weights or slot they go to."""

    files: AdapterFiles
    table: ModuleTable
    rank: int
    device_cache: int = 4
    on_change: Callable[[dict[str, Any]], None] | None = None
    pipe: Any = None
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    mode: str = "slot"  # merge or slot (the runtime picks it from ZFARM_LORA_MODE and the memory policy)
    slot: str | None = None  # the signature written into the slot (merged into the weights); None: zeros (base)
    switches: int = 0
    last_switch_seconds: float = 0.0
    _held: OrderedDict[str, tuple[str, Weights]] = field(default_factory=OrderedDict)
    _warming: bool = False
    _merged: MergedWeights | None = None
    _stale: bool = False  # merge mode: a write failed half way, the weights hold neither `slot` nor the base

    def install(self, pipe: Any, device: str, dtype: torch.dtype) -> None:
        """Before compiling. slot: the slot on every linear module, zero, and off (before fusing too). merge: the
        pristine copy of the targeted weights, where they live (after fusing and placing the pipeline)."""
        if self.mode not in MODES:
            raise ValueError(f"adapter mode must be one of {', '.join(MODES)} (got {self.mode!r})")
        self.pipe, self.device, self.dtype = pipe, device, dtype
        if self.mode == "merge":
            self._merged = MergedWeights(pipe.transformer, self.table)
            self.dtype = torch.float32  # cached A and B: the delta is summed in float32, rounded once into W
            log.info("adapters merge into the weights; pristine copy %.2f GiB", self._merged.bytes / 1024**3)
            self._report()
            return
        zeros = {}
        for name, module in pipe.transformer.named_modules():
            if isinstance(module, torch.nn.Linear):
                zeros[f"transformer.{name}.lora_A.weight"] = torch.zeros(self.rank, module.in_features, dtype=dtype)
                zeros[f"transformer.{name}.lora_B.weight"] = torch.zeros(module.out_features, self.rank, dtype=dtype)
        pipe.enable_lora_hotswap(target_rank=self.rank)
        pipe.load_lora_weights(zeros, adapter_name=SLOT)
        pipe.disable_lora()
        self._report()

    @contextlib.contextmanager
    def use(self, loras: Sequence[Mapping[str, Any]] | None) -> Iterator[None]:
        """slot: the job's adapters in the slot while it renders, the base model again afterwards. merge: the
        weights hold the job's adapters (or the base, for a job without any) before it renders, and keep them."""
        if self._merged is not None:
            wanted = signature(loras or [])
            if self._stale or wanted != self.slot:
                self._write(loras or [], wanted)
            yield  # the weights keep the adapters after the job: the next job with the same ones writes nothing
            return
        if self._warming or not loras:
            yield
            return
        wanted = signature(loras)
        if wanted != self.slot:
            self._write(loras, wanted)
        self.pipe.enable_lora()
        try:
            yield
        finally:
            self.pipe.disable_lora()

    @contextlib.contextmanager
    def warming(self) -> Iterator[None]:
        """The slot on (whatever it holds) for warmup renders: its graphs compile now, not in a customer's job.
        Merged weights need no second warmup (the graphs do not change), and their warmup sees the base."""
        if self._merged is not None:
            yield
            return
        self._warming = True
        self.pipe.enable_lora()
        try:
            yield
        finally:
            self.pipe.disable_lora()
            self._warming = False

    def _write(self, loras: Sequence[Mapping[str, Any]], wanted: str | None) -> None:
        started = time.perf_counter()
        total = sum(int(lora.get("rank") or 0) for lora in loras)
        if self._merged is None and total > self.rank:
            raise ValueError(f"the adapters' ranks add up to {total}; this worker's slot holds {self.rank}")
        weights = [(self._weights(lora), float(lora["scale"])) for lora in loras]
        if self._merged is not None:
            self._stale = True  # until the write completes: a failed write is never taken for a finished one
            self._merged.write(weights)
            self._stale = False
        else:
            state = combined_state_dict(weights)
            self.slot = None  # unknown until the write completes: a failed write is never taken for a finished one
            with torch.no_grad():
                self.pipe.load_lora_weights(state, adapter_name=SLOT, hotswap=True)
        self.slot = wanted
        self.switches += 1
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.last_switch_seconds = time.perf_counter() - started
        log.info("adapter %s now holds %s (%.3f s)", self.mode, wanted, self.last_switch_seconds)
        self._report()

    def _weights(self, lora: Mapping[str, Any]) -> Weights:
        sha = str(lora["sha256"])
        if sha in self._held:
            self._held.move_to_end(sha)
            weights = self._held[sha][1]
            # Shown under the name the latest job used: one file may be uploaded under two names (or by two tenants).
            self._held[sha] = (str(lora["name"]), weights)
            return weights
        weights = read_weights(self.files.path(sha), self.table, self.device, self.dtype)
        self._held[sha] = (str(lora["name"]), weights)
        while len(self._held) > self.device_cache:
            self._held.popitem(last=False)
        return weights

    def state(self) -> dict[str, Any]:
        # A copy first: the heartbeat thread reads this while a render may be loading an adapter.
        held = [{"name": name, "sha256": sha} for sha, (name, _) in reversed(list(self._held.items()))]
        return {"slot": self.slot, "held": held, "mode": self.mode}

    def row(self) -> dict[str, object]:
        """The worker row's column (models.workers.Worker.adapters), for the heartbeat."""
        return {"adapters": self.state()}

    def stats(self) -> dict[str, object]:
        return {
            "lora_mode": self.mode,
            "lora_switches": self.switches,
            "lora_switch_s": round(self.last_switch_seconds, 4),
        }

    def _report(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self.state())
            except Exception:  # the worker row is a view; a failed update must not fail the job
                log.exception("could not record the adapters this worker holds")


def adapter_library(
    settings: FarmSettings, storage: Storage, on_change: Callable[[dict[str, Any]], None]
) -> AdapterLibrary | None:
    """The worker's adapter library, or None when ZFARM_LORA_SLOT_RANK=0 turns adapters off. Its mode is the
    setting's until the runtime resolves `auto` (`choose_mode`)."""
    if settings.lora_slot_rank == 0:
        return None
    return AdapterLibrary(
        files=AdapterFiles(storage, settings.lora_cache_dir, settings.lora_disk_cache_bytes),
        table=table_for(settings.model),
        rank=settings.lora_slot_rank,
        device_cache=settings.lora_device_cache,
        on_change=on_change,
        mode=settings.lora_mode,
    )


def choose_mode(requested: str, policy: str, free_bytes: int | None, needed_bytes: int) -> str:
    """merge or slot. auto: merge under the memory policy `full` when the device has room for the pristine copy
    (`free_bytes` None: a CPU), the slot otherwise. merge under an offload policy is refused: the weights are not
    resident on the device there, and the pristine copy would take the memory the policy is saving."""
    if requested == "slot":
        return "slot"
    if requested == "merge":
        if policy != "full":
            raise RuntimeError(
                f"ZFARM_LORA_MODE=merge needs the memory policy full (this worker runs {policy}): "
                "set ZFARM_LORA_MODE=auto or slot"
            )
        return "merge"
    if requested != "auto":
        raise ValueError(f"lora_mode must be one of auto, merge, slot (got {requested!r})")
    room = free_bytes is None or free_bytes >= needed_bytes
    return "merge" if policy == "full" and room else "slot"


def record_adapters(sessions: sessionmaker[Session], name: str, state: dict[str, Any]) -> None:
    """The worker row shows what it holds (GET /v1/workers); the dispatcher routes a batch's jobs by it."""
    with transaction(sessions) as s:
        s.execute(update(Worker).where(Worker.name == name).values(adapters=state))
