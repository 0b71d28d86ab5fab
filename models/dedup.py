"""Reusing finished images: a job whose content hash matches a succeeded job's is done without a GPU.

Checked twice: by the API when the job is submitted, and by the worker when it claims the job, so that a
job queued while its twin was still queued or running (a catalog sent twice in a row) does not render again.

Image keys derive from job id and index (`core.storage.image_key`), and a reused job's Image rows keep the
original job's storage keys: the bytes are shared, never copied. That keeps the key rule intact, since
nothing new is written under a key, and an original is never rerun (a succeeded job is final), so
the shared bytes never change under the jobs that point at them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.jobs import Job
from models.statuses import JobStatus

CHUNK = 500  # ids per IN (...) list: well under every driver's parameter limit

# The reproducibility record travels with the images: they were made by that model, on that device.
RECORD_FIELDS = ("worker_name", "device_name", "memory_policy", "model_id", "model_revision", "versions", "recovery")


def find_reusable(session: Session, hashes: Iterable[str], tenant: str | None, model: str) -> dict[str, Job]:
    """Succeeded jobs of this tenant by content hash, made by the model this farm is configured with."""
    wanted = list(dict.fromkeys(hashes))
    found: dict[str, Job] = {}
    for i in range(0, len(wanted), CHUNK):
        query = select(Job).where(
            Job.content_hash.in_(wanted[i : i + CHUNK]),
            Job.status == JobStatus.SUCCEEDED,
            Job.model_id == model,
            Job.tenant.is_(None) if tenant is None else Job.tenant == tenant,
        )
        for job in session.scalars(query):
            if len(job.masters) == job.num_images:
                found.setdefault(job.content_hash or "", job)
    return found


def reused_values(original: Job) -> dict[str, Any]:
    """Columns of a new job that is done by reusing `original`'s images."""
    values = {name: getattr(original, name) for name in RECORD_FIELDS}
    values.update(gpu_seconds=0.0, reused_from=original.id, attempts=0)  # the status: models/lifecycle.py
    return values


def copied_images(original: Job, job_id: str) -> list[dict[str, Any]]:
    return [
        {
            "job_id": job_id,
            "index": im.index,
            "rendition": im.rendition,
            "seed": im.seed,
            "width": im.width,
            "height": im.height,
            "format": im.format,
            "sha256": im.sha256,
            "bytes": im.bytes,
            "storage_key": im.storage_key,  # the original's key: see the module docstring
        }
        for im in original.images
    ]
