"""Request and response bodies. Requests refuse unknown fields; every bound is stated here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from api.image_schemas import ASSET_ID, MAX_MASK_PIXELS, InputOut, Mode, Placement
from core.queues import Precision

MAX_SEED = 2**63 - 1
MAX_PROMPT_CHARS = 4000
MAX_RENDITIONS = 4
RENDITION_NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"
OutputFormat = Literal["png", "webp", "jpeg"]


class Rendition(BaseModel):
    """An extra output made on the worker's CPU from the rendered image: downscaled, cropped or padded, encoded."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        None, pattern=RENDITION_NAME, description="names its files and URL; default WIDTHxHEIGHT, e.g. 512x512"
    )
    width: int = Field(ge=16, le=2048, description="at most the job's width: renditions only downscale")
    height: int = Field(ge=16, le=2048, description="at most the job's height: renditions only downscale")
    format: OutputFormat = "webp"
    quality: int = Field(85, ge=1, le=100, description="WebP and JPEG quality; PNG ignores it")
    fit: Literal["cover", "contain"] = Field(
        "cover",
        description="when the aspect ratio differs: cover crops the centre to fill, contain pads with white",
    )
    # A white-background main image (issue 12): made from the job's cutout, not the render, so it may be larger.
    background: Literal["white"] | None = Field(
        None, description="white: the cutout's product on pure white (place and inpaint jobs with a cutout)"
    )
    fill: float | None = Field(
        None, gt=0, le=1, description="with background: the product fits inside fill*width x fill*height (0.85)"
    )

    @field_validator("fill")
    @classmethod
    def _fill_needs_background(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("background") is None:
            raise ValueError("applies only with background: white")
        return value

    @model_validator(mode="after")
    def _default_name(self) -> Rendition:
        if self.name is None:
            self.name = f"{self.width}x{self.height}"
        if self.background is not None and self.fill is None:
            self.fill = 0.85  # the marketplace rule of thumb: the product fills about 85 % of the frame
        return self

    @model_serializer(mode="wrap")
    def _without_unset_background(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A rendition without a background dumps as it did before there were any: stored rows, replays and
        # content hashes of plain renditions stay the same.
        data = handler(self)
        if data.get("background") is None:
            data.pop("background", None)
            data.pop("fill", None)
        return data


def rendition_problems(width: int, height: int, renditions: list[Rendition]) -> list[tuple[str, int, str]]:
    """(field, value, rule) for each rendition larger than the render it is made from."""
    problems = []
    for i, r in enumerate(renditions):
        if r.background is not None:
            continue  # made from the cutout at its own resolution (api/image_modes.py checks those)
        for side, size, limit in (("width", r.width, width), ("height", r.height, height)):
            if size > limit:
                rule = f"must be at most the job's {side} {limit}: renditions are downscaled from the render"
                problems.append((f"renditions.{i}.{side}", size, rule))
    return problems


def unique_rendition_names(renditions: list[Rendition]) -> list[Rendition]:
    names = [r.name or "" for r in renditions]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"rendition names must be unique within a job; repeated: {', '.join(repeated)}")
    return renditions


# A job's or a batch's renditions: at most MAX_RENDITIONS, names unique (they name files and URLs).
Renditions = Annotated[list[Rendition], Field(max_length=MAX_RENDITIONS), AfterValidator(unique_rendition_names)]


MAX_LORAS = 3
LORA_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_LORA_SCALE = 4.0


class LoraRef(BaseModel):
    """A LoRA adapter for one job, by the name it was uploaded under (POST /v1/loras)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=LORA_NAME)
    scale: float | None = Field(
        None,
        ge=-MAX_LORA_SCALE,
        le=MAX_LORA_SCALE,
        allow_inf_nan=False,
        description="how strongly it applies; default: the adapter's default_scale",
    )


def unique_lora_names(loras: list[LoraRef]) -> list[LoraRef]:
    names = [lora.name for lora in loras]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"each adapter at most once per job; repeated: {', '.join(repeated)}")
    return loras


# A job's adapters: at most MAX_LORAS, each name once.
Loras = Annotated[list[LoraRef], Field(max_length=MAX_LORAS), AfterValidator(unique_lora_names)]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    width: int = Field(1024, ge=256, le=2048, multiple_of=16)
    height: int = Field(1024, ge=256, le=2048, multiple_of=16)
    steps: int = Field(8, ge=1, le=50)
    guidance_scale: float = Field(0.0, ge=0.0, le=20.0, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    num_images: int = Field(1, ge=1, le=8)
    output_format: OutputFormat = "png"
    quality: int = Field(95, ge=1, le=100)
    truncate_prompt: bool = Field(
        False, description="cut a prompt longer than the 512-token window instead of refusing it"
    )
    enhance: bool = Field(
        False,
        description="add lighting and quality words chosen by rules from the prompt and the preset (no model); "
        "the job's `adjustments` say what was added",
    )
    preset: str | None = Field(
        None,
        max_length=64,
        description="a preset's size and format (GET /v1/presets); fields sent with the job win over it",
    )
    precision: Precision = Field(
        "bf16",
        description="bf16: exact (the same seed gives the same bytes); fp8: faster, images differ slightly from "
        "bf16 ones; runs only on workers started with ZFARM_PRECISION=fp8",
    )
    dedup: bool = Field(
        True,
        description="reuse the images of an earlier succeeded job with the same model, parameters and seed "
        "instead of rendering again (false forces a new render)",
    )
    callback_url: HttpUrl | None = Field(
        None, max_length=2000, description="http(s) URL that receives a signed JSON POST when the job ends"
    )
    renditions: Renditions = Field(
        default_factory=list,
        description="extra outputs per image made on the worker's CPU from the same render, "
        "e.g. a 512x512 WebP thumbnail beside a 1024x1024 PNG master",
    )
    # Image inputs (issue 12; api/image_modes.py checks them against the assets).
    mode: Mode = Field("text", description="text, img2img, inpaint or place")
    image: str | None = Field(None, pattern=ASSET_ID, description="asset id (POST /v1/assets) of the input image")
    mask: str | None = Field(None, pattern=ASSET_ID, description="inpaint: asset id of a mask, white repaints")
    strength: float | None = Field(
        None, gt=0, le=1, description="how far from the input: img2img default 0.6, inpaint and place 1.0"
    )
    mask_blur: int | None = Field(None, ge=0, le=MAX_MASK_PIXELS, description="inpaint with a mask: seam feather px")
    mask_grow: int | None = Field(None, ge=0, le=MAX_MASK_PIXELS, description="px the painted area reaches under")
    placement: Placement | None = Field(None, description="place: where the cutout's product goes")

    loras: Loras = Field(
        default_factory=list,
        description="LoRA adapters (brand styles) applied to this job, e.g. [{'name': 'brand-x', 'scale': 0.8}]",
    )
    add_trigger_words: bool = Field(False, description="prepend the adapters' trigger words to the prompt")

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain non-whitespace text")
        return value


class StoredFile(BaseModel):
    width: int
    height: int
    format: str
    sha256: str
    bytes: int
    url: str


class RenditionOut(StoredFile):
    name: str


class ImageOut(StoredFile):
    index: int
    seed: int
    renditions: list[RenditionOut] = Field(default_factory=list, description="made from this image, as asked")


class JobProgress(BaseModel):
    step: int | None = Field(description="denoising steps done (reported at most twice a second)")
    total: int
    fraction: float = Field(ge=0.0, le=1.0)
    phase: Literal["queued", "starting", "denoising", "finishing", "done"] = Field(
        description="starting: loading prompts; finishing: decoding and storing images after the last step"
    )


class WebhookOut(BaseModel):
    state: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None


class JobLora(BaseModel):
    name: str
    scale: float
    sha256: str = Field(description="the adapter file it was submitted with (a later upload under the name is not it)")


class JobOut(BaseModel):
    id: str
    status: str
    parameters: dict[str, Any]
    seeds: list[int]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queued_seconds: float | None
    gpu_seconds: float | None
    attempts: int
    error: str | None
    cancel_requested: bool
    recovery: str | None = Field(description="what a retry had to change, e.g. a stricter memory policy after OOM")
    worker_name: str | None
    device_name: str | None
    memory_policy: str | None
    model_id: str | None
    model_revision: str | None
    versions: dict[str, Any] | None
    test_model_noise: bool = Field(description="true when the tiny random test model made these images")
    progress: JobProgress
    callback_url: str | None = None
    webhook: WebhookOut | None = None
    images: list[ImageOut]
    lane: str = Field("interactive", description="interactive (single jobs, served first) or bulk (batch rows)")
    batch_id: str | None = None
    item_key: str | None = Field(None, description="the catalog row's key (e.g. SKU) for batch jobs")
    row_number: int | None = None
    loras: list[JobLora] = Field(default_factory=list, description="the LoRA adapters it renders with")
    content_hash: str | None = Field(None, description="sha256 of model, normalized parameters and seed")
    precision: str = Field("bf16", description="the precision tier that renders (or rendered) this job")
    waiting_for: str | None = Field(
        None,
        description="why a queued job cannot start yet: no live worker (and why one failed to start), or none "
        "runs its precision",
    )
    reused_from: str | None = Field(None, description="the succeeded job whose images this job reuses (no GPU)")
    adjustments: list[str] = Field(
        default_factory=list,
        description="what the farm changed before rendering: enhance words, the default negative prompt",
    )
    requested_prompt: str | None = Field(None, description="the prompt as sent, when the rendered one differs")
    mode: str = Field("text", description="text, img2img, inpaint or place")
    inputs: dict[str, InputOut] = Field(default_factory=dict, description="image (and mask) the job starts from")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = Field("", max_length=200)
    is_admin: bool = False
    max_queued_jobs: int | None = Field(None, ge=1, le=1_000_000_000)
    submits_per_minute: int | None = Field(None, ge=1, le=1_000_000_000)


class KeyOut(BaseModel):
    id: int
    tenant: str
    name: str
    prefix: str
    is_admin: bool
    max_queued_jobs: int | None
    submits_per_minute: int | None
    created_at: datetime
    revoked_at: datetime | None
    key: str | None = Field(None, description="the key itself: shown once, when it is created")


class JobList(BaseModel):
    jobs: list[JobOut]


class LoraOut(BaseModel):
    name: str
    sha256: str = Field(description="of the file: jobs record it, so a new upload under the name is a new style")
    rank: int = Field(description="the largest rank among its modules")
    alpha: float = Field(description="LoRA alpha (a module's effect is scale * alpha / rank * B @ A)")
    targets: list[str] = Field(description="transformer modules it changes; * stands for any block")
    modules: int = Field(description="how many linear modules it changes")
    bytes: int
    trigger_words: str | None
    default_scale: float
    shared: bool = Field(description="published by an admin to every tenant")
    created_at: datetime


class LoraList(BaseModel):
    loras: list[LoraOut]


class WorkerAdapter(BaseModel):
    name: str
    sha256: str
    in_slot: bool = Field(description="in the pipeline's adapter slot now (the last adapters it rendered with)")


class WorkerOut(BaseModel):
    name: str
    hostname: str
    pid: int
    device: str
    gpu_name: str | None
    gpu_memory_total_mib: int | None
    gpu_memory_used_mib: int | None
    memory_policy: str | None
    model_id: str | None
    precision: str | None = Field(None, description="bf16 or fp8: which jobs this worker takes")
    max_pixels: int | None = Field(None, description="the largest image (width x height) its card takes")
    state: str = Field(description="loading, warming, ready, busy, offline (no heartbeat) or failed (could not start)")
    error: str | None = Field(None, description="why a failed worker could not start, e.g. its model did not load")
    current_job_id: str | None
    jobs_done: int
    load_seconds: float | None
    warmup_seconds: float | None
    started_at: datetime
    last_heartbeat: datetime
    adapters: list[WorkerAdapter] = Field(default_factory=list, description="LoRA adapters it holds on its device")


class WorkerList(BaseModel):
    workers: list[WorkerOut]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    broker: str
    storage: str = "ok"  # the data directory or the bucket (ZFARM_STORAGE_URL): "error: ..." with the reason
