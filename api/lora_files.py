"""An uploaded LoRA file, checked before anything is stored: safetensors only, keys and shapes of the Z-Image
transformer, rank and size bounds. Never unpickled: pickle formats are refused by name and by content, and the
file is read with the `safetensors` library (header) and plain byte reads (the few alpha scalars).
"""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from safetensors import SafetensorError, safe_open

from api.refusals import Problem, Refusal, refuse
from core.lora_keys import AdapterInfo, AdapterProblem, ModuleTable, TensorInfo, describe

CHUNK = 1024 * 1024
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# torch.save writes a zip archive of pickles; a bare pickle starts with the PROTO opcode (0x80) and a version.
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_SCALAR = {"F64": "<d", "F32": "<f", "F16": "<e"}


@dataclass(frozen=True)
class SavedUpload:
    path: Path
    sha256: str
    bytes: int


def save_upload(source: BinaryIO, max_bytes: int, directory: Path | None = None) -> SavedUpload:
    """Copies the upload to a temporary file, hashing it; refuses it (413) as soon as it passes `max_bytes`."""
    digest, size = hashlib.sha256(), 0
    with tempfile.NamedTemporaryFile(dir=directory, prefix="lora-", suffix=".safetensors", delete=False) as out:
        path = Path(out.name)
        try:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise refuse(
                        f"is over the limit of {max_bytes} bytes for LoRA files (ZFARM_MAX_LORA_BYTES)",
                        field="file",
                        value=f"more than {max_bytes} bytes",
                        status_code=413,
                    )
                digest.update(chunk)
                out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    return SavedUpload(path, digest.hexdigest(), size)


def check_adapter(path: Path, filename: str, table: ModuleTable, max_rank: int) -> AdapterInfo:
    """The adapter's ranks, scalings and targets, or a Refusal (422) naming the rule and the first bad key."""
    name = filename or "upload"
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise refuse(
            "pickle formats (.bin, .pt, .pth, .ckpt) are refused: they can run code when loaded; "
            "convert the adapter to .safetensors",
            field="file",
            value=name,
        )
    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(_PICKLE_MAGIC):
        raise refuse("is a pickle (or torch.save zip), not safetensors: refused unread", field="file", value=name)
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata()
            tensors = {k: TensorInfo(tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118 (a safe_open, not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        raise refuse(f"does not parse as a safetensors file: {exc}", field="file", value=name) from exc
    try:
        alphas = _scalars(path, [k for k in tensors if k.endswith(".alpha")])
        return describe(tensors, alphas, metadata, table, max_rank)
    except AdapterProblem as exc:
        raise Refusal([_problem(exc, name)]) from exc


def _problem(exc: AdapterProblem, filename: str) -> Problem:
    if exc.key is None:
        return Problem(exc.rule, field="file", value=filename)
    return Problem(f"tensor {exc.key!r} {exc.rule}", field="file", value=exc.key)


def _scalars(path: Path, keys: list[str]) -> dict[str, float]:
    """The values of one-number tensors (LoRA alphas), read as bytes at the offsets the header gives.

    safe_open has checked the header already; numpy, which safetensors would read through, has no bfloat16.
    """
    if not keys:
        return {}
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
        values = {}
        for key in keys:
            entry = header[key]
            start, end = entry["data_offsets"]
            fh.seek(8 + length + start)
            raw = fh.read(end - start)
            values[key] = _decode(entry["dtype"], raw, key)
    return values


def _decode(dtype: str, raw: bytes, key: str) -> float:
    if dtype == "BF16" and len(raw) == 2:
        return float(struct.unpack("<f", b"\x00\x00" + raw)[0])  # bfloat16 is the top half of a float32
    if dtype in _SCALAR and len(raw) == struct.calcsize(_SCALAR[dtype]):
        return float(struct.unpack(_SCALAR[dtype], raw)[0])
    raise AdapterProblem(f"an alpha is one float number (got {dtype}, {len(raw)} bytes)", key)
