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


def asset_path(asset_id: str) -> str:
    """`/v1/assets/ID/content`: an input image's stored bytes (api/routes/assets.py)."""
    return f"/v1/assets/{asset_id}/content"


def input_records(job: Job, base_url: str) -> dict[str, dict[str, Any]]:
    """The images a job starts from (image, mask): what its record, webhook and manifest name."""
    base = base_url.rstrip("/")
    roles = (("image", job.image_asset), ("mask", job.mask_asset))
    return {
        role: {
            "id": asset.id,
            "sha256": asset.sha256,
            "width": asset.width,
            "height": asset.height,
            "has_alpha": asset.has_alpha,
            "url": base + asset_path(asset.id),
        }
        for role, asset in roles
        if asset is not None
    }
