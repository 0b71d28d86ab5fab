"""The HTTP path of a stored image or rendition (the API's routes in api/routes/jobs.py serve these).

One place for the shape, shared by the job records, the batch manifest, the webhook payloads and the
Python client, which build many URLs without a request at hand (url_for per manifest line is slow for
10,000 lines).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the Python client imports this module and must not need the models
    from models.jobs import Job


def image_path(job_id: str, index: int, rendition: str | None = None) -> str:
    """`/v1/jobs/ID/images/0`, or `/v1/jobs/ID/images/0/renditions/thumb` for a rendition."""
    path = f"/v1/jobs/{job_id}/images/{index}"
    return f"{path}/renditions/{rendition}" if rendition else path


def image_records(job: Job, base_url: str) -> list[dict[str, Any]]:
    """A job's rendered images, each with its renditions: what the API and the webhook payloads list."""
    base = base_url.rstrip("/")
    return [
        {
            "index": im.index,
            "seed": im.seed,
            **_file(im, base + image_path(job.id, im.index)),
            "renditions": [
                {"name": r.rendition, **_file(r, base + image_path(job.id, im.index, r.rendition))}
                for r in job.renditions_of(im.index)
            ],
        }
        for im in job.masters
    ]


def _file(row: Any, url: str) -> dict[str, Any]:
    return {
        "width": row.width,
        "height": row.height,
        "format": row.format,
        "sha256": row.sha256,
        "bytes": row.bytes,
        "url": url,
    }
