"""Where the pipeline comes from: a Hugging Face repo id, a local directory, or the `tiny` test model.

All three go through `ZImagePipeline.from_pretrained`: the tests exercise the production path.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import ZImagePipeline
from huggingface_hub import constants, try_to_load_from_cache

from core.settings import TINY_MODEL as TINY
from worker.tiny_model import TINY_VERSION, ensure_tiny_model

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelSource:
    model_id: str  # what the operator asked for: repo id, directory, or "tiny"
    location: str  # what from_pretrained receives
    revision: str | None
    is_test_model: bool


def resolve_source(model: str, revision: str | None, models_dir: Path) -> ModelSource:
    if model == TINY:
        path = ensure_tiny_model(models_dir / TINY_VERSION)
        return ModelSource(TINY, str(path), TINY_VERSION, is_test_model=True)
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(f"model directory {model!r} has no model_index.json (not a diffusers pipeline)")
        return ModelSource(model, str(path.resolve()), revision or _local_revision(path), is_test_model=False)
    if model.startswith(("/", ".", "~")):
        raise ModelLoadError(f"model directory {model!r} does not exist")
    return ModelSource(model, model, revision, is_test_model=False)


def _local_revision(path: Path) -> str:
    # A snapshot in the Hugging Face cache is named by its commit; any other directory by its index file.
    if path.parent.name == "snapshots":
        return path.name
    return "local-" + hashlib.sha256((path / "model_index.json").read_bytes()).hexdigest()[:12]


def _load_failure(source: ModelSource, exc: OSError) -> str:
    """One line that says what is missing and what to do, not the loader's page of causes."""
    if Path(source.location).is_dir() or _cached(source):
        return f"could not load model {source.model_id!r}: {_first_sentence(str(exc))}"
    cause = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else _first_sentence(str(exc))
    return (
        f"model {source.model_id!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
        f"could not be downloaded ({cause}). Get the weights with `hf download "
        f"{source.model_id}` where the hub is reachable, or set ZFARM_MODEL to a directory holding them; "
        "ZFARM_MODEL=tiny runs the random test model (its images are noise)"
    )


def _cached(source: ModelSource) -> bool:
    found = try_to_load_from_cache(source.location, "model_index.json", revision=source.revision)
    return isinstance(found, str)


def _first_sentence(text: str, limit: int = 200) -> str:
    first = text.strip().splitlines()[0] if text.strip() else "no reason given"
    first = first.split(". ", 1)[0].rstrip(".")
    return first if len(first) <= limit else first[: limit - 3] + "..."


def load_pipeline(source: ModelSource, dtype: torch.dtype) -> ZImagePipeline:
    try:
        # A revision only means something for a hub id; a local directory is what it is.
        revision = None if Path(source.location).is_dir() else source.revision
        pipe = ZImagePipeline.from_pretrained(source.location, revision=revision, dtype=dtype)
    except OSError as exc:
        raise ModelLoadError(_load_failure(source, exc)) from exc
    pipe.set_progress_bar_config(disable=True)
    # The text encoder reads each prompt once: a KV cache (transformers builds one by default) is pure overhead.
    if hasattr(pipe.text_encoder, "config"):
        pipe.text_encoder.config.use_cache = False
    return pipe
