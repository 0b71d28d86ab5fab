"""Request and response bodies of catalog campaigns: batches, presets, saved templates."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from api.image_schemas import MAX_MASK_PIXELS, Mode, Placement
from api.schemas import MAX_PROMPT_CHARS, MAX_SEED, Loras, Renditions, WebhookOut
from core.presets import PRESET_NAME, ParameterSet, Preset
from core.queues import Precision

CellValue = str | int | float | bool | None
TEMPLATE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class BatchDefaults(ParameterSet):
    """A batch's parameters for every row: a preset's, plus the LoRA adapters (a row's `lora` column beats them)."""

    loras: Loras | None = Field(None, description="adapters for every row, e.g. [{'name': 'brand-x', 'scale': 0.8}]")
    add_trigger_words: bool | None = Field(None, description="prepend the adapters' trigger words to every prompt")


class BatchOptions(BaseModel):
    """Everything about a batch except its rows (a JSON body adds `rows`, an upload adds `file`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200)
    template: str | None = Field(
        None, min_length=1, max_length=MAX_PROMPT_CHARS, description="e.g. 'photo of {product}'"
    )
    template_name: str | None = Field(None, pattern=TEMPLATE_NAME, description="a template saved with /v1/templates")
    key_column: str = Field("sku", min_length=1, max_length=100, description="the column that names each item")
    defaults: BatchDefaults = Field(default_factory=BatchDefaults, description="parameters for every row")
    preset: str | None = Field(None, pattern=PRESET_NAME)
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="rows without a seed column get sha256(batch seed, key): stable per key"
    )
    dedup: bool = Field(True, description="reuse images of succeeded jobs with the same content hash")
    truncate_prompt: bool = False
    enhance: bool = Field(
        False, description="add lighting and quality words by rules to every row's prompt (see a job's enhance)"
    )
    precision: Precision = Field("bf16", description="bf16 (exact) or fp8 (faster, not exact) for every row")
    renditions: Renditions = Field(
        default_factory=list,
        description="extra outputs for every image of the batch (e.g. a 512x512 WebP thumbnail); in an upload, "
        "a JSON list",
    )
    callback_url: HttpUrl | None = Field(
        None,
        max_length=2000,
        description="http(s) URL that receives a signed JSON POST (event batch.finished) when no job of the "
        "batch is left to run",
    )
    # Image modes for every row (issue 12); rows override them with their own columns. The `image` (and
    # `mask`) column names a file in the `images` zip of an upload, or an asset id.
    mode: Mode = Field("text", description="text, img2img, inpaint or place, for every row")
    strength: float | None = Field(None, gt=0, le=1)
    mask_blur: int | None = Field(None, ge=0, le=MAX_MASK_PIXELS)
    mask_grow: int | None = Field(None, ge=0, le=MAX_MASK_PIXELS)
    placement: Placement | None = Field(None, description="place: where each cutout's product goes; in an upload, JSON")

    @model_validator(mode="after")
    def _one_template(self) -> BatchOptions:
        if (self.template is None) == (self.template_name is None):
            raise ValueError("send exactly one of template and template_name")
        return self


class BatchCreate(BatchOptions):
    rows: list[dict[str, CellValue]] = Field(min_length=1, description="one object per item, column: value")


class BatchCreated(BaseModel):
    id: str
    name: str
    rows: int
    jobs_created: int
    jobs_reused: int = Field(description="rows done at once by reusing finished images (no GPU)")
    jobs_queued: int
    seed: int
    url: str
    manifest_url: str
    archive_url: str


class PreviewRow(BaseModel):
    key: str
    row: int
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    seed: int
    output_format: str
    adjustments: list[str] = Field(default_factory=list)


class BatchPreview(BaseModel):
    """A dry run's answer: what the batch would be. A catalog with problems answers 422 with every one."""

    rows: int
    jobs_reused: int = Field(description="rows that finished images of the same content hash would serve (no GPU)")
    jobs_queued: int
    preview: list[PreviewRow] = Field(description="the first rows as they would render")


BatchState = Literal["active", "succeeded", "failed", "canceled"]


class BatchOut(BaseModel):
    id: str
    name: str
    created_by: str | None = Field(None, description="the tenant whose key created it (none on an open farm)")
    status: BatchState = Field(description="active until every job is final; then succeeded, failed or canceled")
    template: str
    key_column: str
    preset: str | None
    defaults: dict[str, object] | None
    renditions: list[dict[str, object]] = Field(description="made for every image of the batch")
    seed: int
    dedup: bool
    source: str
    rows: int
    counts: dict[str, int] = Field(description="jobs by status")
    done: int
    progress: float = Field(description="final jobs / all jobs, 0..1")
    images_done: int
    jobs_reused: int
    gpu_seconds: float
    eta_seconds: float | None = Field(description="at the batch's recent pace; null until two jobs have finished")
    created_at: datetime
    canceled_at: datetime | None
    callback_url: str | None = None
    webhook: WebhookOut | None = Field(None, description="the latest delivery of the batch.finished webhook")
    url: str
    manifest_url: str
    archive_url: str


class BatchList(BaseModel):
    batches: list[BatchOut]


class RetryOut(BaseModel):
    batch_id: str
    requeued: int


class PresetOut(Preset):
    name: str
    shipped: bool


class PresetList(BaseModel):
    presets: list[PresetOut]


class TemplateParts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=1000)
    action: str | None = Field(None, max_length=1000)
    lighting: str | None = Field(None, max_length=1000)
    style: str | None = Field(None, max_length=1000)
    quality: str | None = Field(None, max_length=1000)


class TemplateSave(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TEMPLATE_NAME)
    template: str | None = Field(None, min_length=1, max_length=MAX_PROMPT_CHARS)
    parts: TemplateParts | None = Field(
        None, description="[subject] + [pose/action] + [lighting] + [style] + [quality words], joined with commas"
    )
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    preset: str | None = Field(None, pattern=PRESET_NAME)

    @model_validator(mode="after")
    def _one_source(self) -> TemplateSave:
        if (self.template is None) == (self.parts is None):
            raise ValueError("send exactly one of template and parts")
        return self


class TemplateOut(BaseModel):
    name: str
    template: str
    parts: dict[str, str | None] | None
    negative_prompt: str | None
    preset: str | None
    columns: list[str]
    created_at: datetime
    updated_at: datetime


class TemplateList(BaseModel):
    templates: list[TemplateOut]
