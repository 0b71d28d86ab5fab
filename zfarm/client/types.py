"""What the farm answers, as typed dictionaries (the JSON the API sends; fields as the API names them).

Typed dictionaries rather than classes: the client depends on httpx only, and a record is usable as the
plain JSON it is (printing, storing, comparing) while a type checker still knows its fields.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

JobState = Literal["queued", "running", "succeeded", "failed", "canceled", "dead"]


class StoredFile(TypedDict):
    width: int
    height: int
    format: str
    sha256: str
    bytes: int
    url: str


class Rendition(StoredFile):
    name: str


class Image(StoredFile):
    index: int
    seed: int
    renditions: list[Rendition]


class Progress(TypedDict):
    step: int | None
    total: int
    fraction: float
    phase: Literal["queued", "starting", "denoising", "finishing", "done"]


class Webhook(TypedDict):
    state: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    delivered_at: str | None


class JobLora(TypedDict):
    name: str
    scale: float
    sha256: str


class Job(TypedDict):
    """A job's record (GET /v1/jobs/{id}); times are ISO 8601 strings."""

    id: str
    status: JobState
    parameters: dict[str, Any]  # prompt, negative_prompt, width, height, steps, guidance_scale, format, ...
    seeds: list[int]
    created_at: str
    started_at: str | None
    finished_at: str | None
    queued_seconds: float | None
    gpu_seconds: float | None
    attempts: int
    error: str | None
    cancel_requested: bool
    recovery: str | None
    worker_name: str | None
    device_name: str | None
    memory_policy: str | None
    model_id: str | None
    model_revision: str | None
    versions: dict[str, Any] | None
    test_model_noise: bool
    progress: Progress
    callback_url: str | None
    webhook: Webhook | None
    images: list[Image]
    lane: str
    batch_id: str | None
    item_key: str | None
    row_number: int | None
    loras: list[JobLora]
    content_hash: str | None
    reused_from: str | None
    precision: str  # bf16 or fp8
    waiting_for: str | None  # why a queued job cannot start yet (no live worker at all, or none of its precision)
    mode: str  # text, img2img, inpaint or place
    inputs: dict[str, Input]  # image (and mask) the job starts from
    adjustments: list[str]  # what the farm changed before rendering (enhance words, default negative prompt)
    requested_prompt: str | None  # the prompt as sent, when the rendered one differs


class Input(TypedDict):
    """An input image as a job's record names it."""

    id: str
    sha256: str
    width: int
    height: int
    has_alpha: bool
    url: str


class Asset(TypedDict):
    """An uploaded input image (POST /v1/assets, GET /v1/assets/{id})."""

    id: str
    sha256: str
    width: int
    height: int
    format: str
    has_alpha: bool
    conversions: list[str]
    product_box: list[int] | None
    filename: str | None
    bytes: int
    created_at: str
    url: str


class Batch(TypedDict):
    """A batch's record (GET /v1/batches/{id})."""

    id: str
    name: str
    created_by: str | None
    status: Literal["active", "succeeded", "failed", "canceled"]
    template: str
    key_column: str
    preset: str | None
    defaults: dict[str, Any] | None
    renditions: list[dict[str, Any]]
    seed: int
    dedup: bool
    source: str
    rows: int
    counts: dict[str, int]
    done: int
    progress: float
    images_done: int
    jobs_reused: int
    gpu_seconds: float
    eta_seconds: float | None
    created_at: str
    canceled_at: str | None
    callback_url: str | None
    webhook: Webhook | None
    url: str
    manifest_url: str
    archive_url: str


class BatchCreated(TypedDict):
    """The answer to POST /v1/batches."""

    id: str
    name: str
    rows: int
    jobs_created: int
    jobs_reused: int
    jobs_queued: int
    seed: int
    url: str
    manifest_url: str
    archive_url: str


class Worker(TypedDict):
    name: str
    hostname: str
    pid: int
    device: str
    gpu_name: str | None
    gpu_memory_total_mib: int | None
    gpu_memory_used_mib: int | None
    memory_policy: str | None
    model_id: str | None
    precision: str | None  # the tier it runs: bf16 or fp8
    max_pixels: int | None  # the largest image its card takes (routing by card)
    state: str
    error: str | None
    current_job_id: str | None
    jobs_done: int
    load_seconds: float | None
    warmup_seconds: float | None
    started_at: str
    last_heartbeat: str
    adapters: list[WorkerAdapter]


class WorkerAdapter(TypedDict):
    name: str
    sha256: str
    in_slot: bool


class Lora(TypedDict):
    """An adapter's record (GET /v1/loras/{name})."""

    name: str
    sha256: str
    rank: int
    alpha: float
    targets: list[str]
    modules: int
    bytes: int
    trigger_words: str | None
    default_scale: float
    shared: bool
    created_at: str


JSON = dict[str, Any]
