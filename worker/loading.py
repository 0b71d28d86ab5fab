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


def load_pipeline(source: ModelSource, dtype: torch.dtype) -> ZImagePipeline:
    try:
        # A revision only means something for a hub id; a local directory is what it is.
        revision = None if Path(source.location).is_dir() else source.revision
        pipe = ZImagePipeline.from_pretrained(source.location, revision=revision, dtype=dtype)
    except OSError as exc:
        raise ModelLoadError(
            f"could not load model {source.model_id!r}: {exc}. Without network access the weights must be "
            "in the local Hugging Face cache or in a directory given as ZFARM_MODEL; ZFARM_MODEL=tiny "
            "runs the random test model"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    # The text encoder reads each prompt once: a KV cache (transformers builds one by default) is pure overhead.
    if hasattr(pipe.text_encoder, "config"):
        pipe.text_encoder.config.use_cache = False
    return pipe
