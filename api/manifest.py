"""The batch manifest: one CSV line per image (or per job without images), safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from models import Image, Job
from models.records import is_test_model, parameters

COLUMNS = [
    "key",
    "row",
    "status",
    "approved",
    "file",
    "prompt",
    "negative_prompt",
    "seed",
    "width",
    "height",
    "format",
    "url",
    "sha256",
    "bytes",
    "gpu_seconds",
    "reused_from",
    "job_id",
    "image_index",
    "rendition",
    "worker",
    "model",
    "model_revision",
    "loras",
    "test_model_noise",
    "error",
    # image modes (issue 12): what the job started from
    "mode",
    "input_image_id",
    "input_image_sha256",
    "input_mask_id",
    "input_mask_sha256",
]
# A cell starting with one of these is run as a formula by spreadsheet programs (CSV injection):
# such cells get a leading apostrophe, which spreadsheets show as text and do not evaluate.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
EXT = {"png": "png", "webp": "webp", "jpeg": "jpg"}
ImageUrl = Callable[[Image], str]  # the API's route for the file, or a presigned link to it in the bucket
ImageId = tuple[int, str]  # (index, rendition): one stored file of a job


def safe_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


class FileNamer:
    """Archive names from keys: `KEY.png`, or `KEY_0.png`, `KEY_1.png` for several images per job.

    Renditions go in a folder named for the rendition, under the same name: `thumb/KEY.webp`. A team
    uploading one size to a marketplace takes one folder; keys cannot hold '/', so no folder collides.
    """

    def __init__(self) -> None:
        self.used: set[str] = set()

    def names(self, job: Job, missing: set[str] | frozenset[str] = frozenset()) -> dict[ImageId, str]:
        """File names of the job's files by (index, rendition); files whose bytes are missing get none."""
        return {(im.index, im.rendition): self._name(job, im) for im in job.images if im.storage_key not in missing}

    def _name(self, job: Job, image: Image) -> str:
        stem = job.item_key or job.id
        base = stem if job.num_images == 1 else f"{stem}_{image.index}"
        folder = f"{image.rendition}/" if image.rendition else ""
        name = f"{folder}{base}.{EXT[image.format]}"
        if name in self.used:  # 'A_1' with one image and 'A' with two would both give A_1.png
            name = f"{folder}{base}-{job.id[:8]}.{EXT[image.format]}"
        self.used.add(name)
        return name


def manifest_lines(job: Job, names: dict[ImageId, str], image_url: ImageUrl) -> list[list[str]]:
    """The manifest lines of one job; an image without a name in `names` has lost its bytes."""
    asked = parameters(job)  # the same fields as the job's record (models/records.py)
    common = {
        "key": job.item_key,
        "row": job.row_number,
        "status": job.status,
        "approved": {"approved": "true", "rejected": "false"}.get(job.review or "", ""),  # "": not reviewed yet
        "prompt": asked["prompt"],
        "negative_prompt": asked["negative_prompt"],
        "width": asked["width"],
        "height": asked["height"],
        "gpu_seconds": f"{job.gpu_seconds:.3f}" if job.gpu_seconds is not None else "",
        "reused_from": job.reused_from,
        "job_id": job.id,
        "worker": job.worker_name,
        "model": job.model_id,
        "model_revision": job.model_revision,
        # name:scale:sha256 of each adapter, space separated: the exact file, as in the PNG parameters
        "loras": " ".join(f"{x['name']}:{x['scale']:g}:{x['sha256']}" for x in job.loras or []),
        "test_model_noise": is_test_model(job.model_id) if job.model_id else "",
        "error": job.error,
        **input_cells(job),
    }
    if not job.images:
        return [[safe_cell({**common, "seed": job.seed, "format": job.output_format}.get(c)) for c in COLUMNS]]
    lines = []
    for image in job.images:
        which = (image.index, image.rendition)
        gone = which not in names
        line = {
            **common,
            "file": names.get(which, ""),
            "seed": image.seed,
            "width": image.width,
            "height": image.height,
            "format": image.format,
            "url": image_url(image),
            "sha256": image.sha256,
            "bytes": image.bytes,
            "image_index": image.index,
            "rendition": image.rendition,
            "error": "image bytes missing from storage" if gone else job.error,
        }
        lines.append([safe_cell(line.get(c)) for c in COLUMNS])
    return lines


def input_cells(job: Job) -> dict[str, Any]:
    cells: dict[str, Any] = {"mode": job.mode}
    for role, asset in (("image", job.image_asset), ("mask", job.mask_asset)):
        if asset is not None:
            cells[f"input_{role}_id"], cells[f"input_{role}_sha256"] = asset.id, asset.sha256
    return cells


def csv_chunks(jobs: Iterable[Job], image_url: ImageUrl) -> Iterator[str]:
    """The manifest as text chunks, about one page of jobs each: memory does not grow with the batch."""
    namer, buf = FileNamer(), io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for n, job in enumerate(jobs, start=1):
        writer.writerows(manifest_lines(job, namer.names(job), image_url))
        if n % 200 == 0:
            yield _drain(buf)
    yield _drain(buf)


def _drain(buf: io.StringIO) -> str:
    text = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return text
