"""What makes two jobs the same: derived seeds and the content hash used for dedup."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

SEED_SPACE = 2**63
# Bump when the rendering path changes what the same parameters produce. 2: issue 15's levers (fused projections,
# compiled text encoder and VAE, PNG written on several cores) and the precision tier.
HASH_VERSION = 2


def derive_seed(batch_seed: int, key: str) -> int:
    """A row's seed from the batch seed and the row's key alone: adding or reordering rows changes no other seed."""
    digest = hashlib.sha256(f"zfarm-seed-v1\x1f{batch_seed}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_SPACE


def normalized_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that decides the image bytes, in one canonical form.

    Defaults and presets are already applied by the caller, so `{}` and `{"width": 1024}` hash the same.
    The prompt is kept as sent: the text encoder sees every character, so whitespace changes the image.
    PNG ignores `quality`, so it is left out for PNG. Renditions are part of what a job delivers, so they
    count; a job without any hashes as it did before renditions existed. So do LoRA adapters (resolved:
    each with its file's sha256), and a job without adapters hashes as before.
    """
    fmt = params["output_format"]
    out = {
        "prompt": params["prompt"],
        "negative_prompt": params.get("negative_prompt") or None,
        "width": int(params["width"]),
        "height": int(params["height"]),
        "steps": int(params["steps"]),
        "guidance_scale": float(params["guidance_scale"]),
        "seed": int(params["seed"]),
        "num_images": int(params["num_images"]),
        "output_format": fmt,
        "quality": None if fmt == "png" else int(params["quality"]),
        "truncate_prompt": bool(params.get("truncate_prompt", False)),
        # An fp8 image is not a bf16 one: the two never dedup against each other.
        "precision": params.get("precision") or "bf16",
    }
    if renditions := params.get("renditions"):
        out["renditions"] = [_rendition(r) for r in renditions]
    if loras := params.get("loras"):
        # The adapter file (not its name: a new upload under a name is another style) and its scale; the
        # trigger words when they are prepended, since they change the prompt the encoder reads.
        out["loras"] = [{"sha256": lora["sha256"], "scale": float(lora["scale"])} for lora in loras]
        if params.get("add_trigger_words"):
            out["trigger_words"] = [lora.get("trigger_words") or "" for lora in loras]
    if params.get("mode", "text") != "text":
        # Image modes (issue 12): the inputs' bytes (sha256) and the mode parameters decide the image too, so a
        # different photo never reuses another's images. Text jobs hash as they did before modes existed.
        out["mode"] = params["mode"]
        out["inputs"] = dict(params["inputs"])
        out["mode_parameters"] = params["mode_parameters"]
    return out


def _rendition(spec: Mapping[str, Any]) -> dict[str, Any]:
    fmt = spec["format"]
    return {
        "name": spec["name"],
        "width": int(spec["width"]),
        "height": int(spec["height"]),
        "format": fmt,
        "quality": None if fmt == "png" else int(spec["quality"]),
        "fit": spec.get("fit", "cover"),
        **({"background": spec["background"], "fill": float(spec["fill"])} if spec.get("background") else {}),
    }


def content_hash(params: Mapping[str, Any], model: str, revision: str | None) -> str:
    """sha256 of (model id and revision, normalized parameters, seed)."""
    record = {"v": HASH_VERSION, "model": model, "revision": revision, **normalized_parameters(params)}
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
