"""A job's record as people and programs read it: one builder for the API's answer, the webhook payload
and the batch manifest, so the three never disagree on a field.

Image URLs are built here from a base URL rather than per request (url_for per manifest line is slow for
10,000 lines); the API's routes in api/routes/jobs.py serve these paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.settings import TINY_MODEL
from models.jobs import Job
from models.statuses import FINAL_STATUSES, JobStatus

# storage key -> a short-lived link to the object in the bucket (ZFARM_PRESIGNED_URLS=true), None: the API's route
Presign = Callable[[str], str | None]


def image_path(job_id: str, index: int, rendition: str | None = None) -> str:
    """`/v1/jobs/ID/images/0`, or `/v1/jobs/ID/images/0/renditions/thumb` for a rendition."""
    path = f"/v1/jobs/{job_id}/images/{index}"
    return f"{path}/renditions/{rendition}" if rendition else path


def is_test_model(model_id: str | None) -> bool:
    return model_id == TINY_MODEL


def parameters(job: Job) -> dict[str, Any]:
    """What was asked for: enough to submit the same job again."""
    return {
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "width": job.width,
        "height": job.height,
        "steps": job.steps,
        "guidance_scale": job.guidance_scale,
        "seed": job.seed,
        "num_images": job.num_images,
        "output_format": job.output_format,
        "quality": job.quality,
        "renditions": job.renditions or [],
        "loras": [{"name": lora["name"], "scale": lora["scale"]} for lora in job.loras or []],
        "add_trigger_words": job.add_trigger_words,
        "mode": job.mode,
        **(job.mode_parameters or {}),  # strength, mask_blur, mask_grow, placement: as the job runs them
    }


def progress(job: Job) -> dict[str, Any]:
    """Step of total, a fraction for a bar, and the phase: queued, starting, denoising, finishing, done."""
    total = job.progress_total or job.steps
    step = job.progress_step
    if job.status == JobStatus.SUCCEEDED:
        return {"step": total, "total": total, "fraction": 1.0, "phase": "done"}
    if job.status in FINAL_STATUSES:
        return {"step": step, "total": total, "fraction": min(1.0, (step or 0) / total), "phase": "done"}
    if job.status == JobStatus.QUEUED or step is None:
        phase = "queued" if job.status == JobStatus.QUEUED else "starting"
        return {"step": None, "total": total, "fraction": 0.0, "phase": phase}
    # After the last step the worker decodes the latents and stores the images.
    phase = "finishing" if step >= total else "denoising"
    return {"step": step, "total": total, "fraction": min(1.0, step / total), "phase": phase}


def job_record(job: Job, base_url: str, presign: Presign | None = None) -> dict[str, Any]:
    """The job's whole record: GET /v1/jobs/{id}, the webhook's `job`, the manifest's columns."""
    queued = (job.started_at - job.created_at).total_seconds() if job.started_at else None
    delivery = job.webhook
    return {
        "id": job.id,
        "status": job.status,
        "parameters": parameters(job),
        "seeds": [job.image_seed(i) for i in range(job.num_images)],
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "queued_seconds": queued,
        "gpu_seconds": job.gpu_seconds,
        "attempts": job.attempts,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "recovery": job.recovery,
        "worker_name": job.worker_name,
        "device_name": job.device_name,
        "memory_policy": job.memory_policy,
        "model_id": job.model_id,
        "model_revision": job.model_revision,
        "versions": job.versions,
        "test_model_noise": is_test_model(job.model_id),
        "progress": progress(job),
        "callback_url": delivery.url if delivery else None,
        "webhook": None if delivery is None else _webhook(delivery),
        "images": image_records(job, base_url, presign),
        "lane": job.lane,
        "batch_id": job.batch_id,
        "item_key": job.item_key,
        "row_number": job.row_number,
        "loras": [{k: lora[k] for k in ("name", "scale", "sha256")} for lora in job.loras or []],
        "content_hash": job.content_hash,
        "reused_from": job.reused_from,
        "adjustments": job.adjustments or [],
        "requested_prompt": job.requested_prompt,
        "precision": job.precision,
        "mode": job.mode,
        "inputs": input_records(job, base_url, presign),
    }


def _webhook(delivery: Any) -> dict[str, Any]:
    return {
        "state": delivery.state,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "delivered_at": delivery.delivered_at,
    }


def image_records(job: Job, base_url: str, presign: Presign | None = None) -> list[dict[str, Any]]:
    """A job's rendered images, each with its renditions; with `presign`, their URLs are links to the bucket."""
    base = base_url.rstrip("/")
    return [
        {
            "index": im.index,
            "seed": im.seed,
            **_file(im, _link(im.storage_key, base + image_path(job.id, im.index), presign)),
            "renditions": [
                {
                    "name": r.rendition,
                    **_file(r, _link(r.storage_key, base + image_path(job.id, im.index, r.rendition), presign)),
                }
                for r in job.renditions_of(im.index)
            ],
        }
        for im in job.masters
    ]


def _link(key: str, api_url: str, presign: Presign | None) -> str:
    return (presign(key) if presign is not None else None) or api_url


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


def input_records(job: Job, base_url: str, presign: Presign | None = None) -> dict[str, dict[str, Any]]:
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
            "url": _link(asset.storage_key, base + asset_path(asset.id), presign),
        }
        for role, asset in roles
        if asset is not None
    }
