"""One settings object per process, read from `ZFARM_*` environment variables.

Built lazily through `get_settings()` so that importing a module never fails on a missing or bad
variable; validators raise on bad values instead of adjusting them.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core import data_layout
from core.presets import PRESET_NAME, SHIPPED, Preset
from core.queues import DEFAULT_LARGE_PIXELS, Precision, bulk_queue_name, precision_queue
from core.storage import parse_s3_url
from core.webhook_targets import IPNetwork, parse_networks

MemoryPolicy = Literal["auto", "full", "model-offload", "sequential-offload"]
CompileMode = Literal["auto", "on", "off"]
LoraMode = Literal["auto", "merge", "slot"]
DEFAULT_MODEL = "Tongyi-MAI/Z-Image-Turbo"
TINY_MODEL = "tiny"


class FarmSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZFARM_", extra="ignore")

    data_dir: Path = Path("./data")
    # Object storage (issue 14): images, renditions, input images and adapter files in a bucket that every host
    # reaches (s3://BUCKET/PREFIX); unset, they stay under DATA_DIR/images. Credentials: the standard AWS variables.
    storage_url: str | None = None
    s3_endpoint_url: str | None = None  # any S3-compatible service (MinIO, R2, Ceph); unset: AWS S3
    storage_timeout_seconds: float = Field(10.0, gt=0, le=300)  # connecting to the store
    # A worker's writes wait this long for a store that does not answer (restarting, network away) before the job
    # fails: a rendered image is GPU time, and a store back within it loses nothing.
    storage_outage_seconds: float = Field(120.0, ge=0, le=3600)
    # Records, webhooks and manifests link to the bucket itself (signed, expiring links) and the image routes
    # redirect there (307): bytes no longer pass through the API. S3 signatures last at most 7 days.
    presigned_urls: bool = False
    presigned_url_seconds: int = Field(900, ge=1, le=7 * 24 * 3600)
    database_url: str | None = None
    redis_url: str | None = None

    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    flower_port: int = Field(5555, ge=1, le=65535)
    flower_user: str = "zfarm"
    flower_password: str | None = None
    public_url: str | None = None

    model: str = DEFAULT_MODEL
    model_revision: str | None = None
    memory_policy: MemoryPolicy = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    warmup: bool = True
    warmup_size: int = Field(1024, ge=256, le=2048)
    vae_tiling_min_pixels: int = Field(1536 * 1536, ge=256 * 256)

    # Throughput levers (issue 5; figures in BENCHMARKS.md). `auto` compiles on CUDA under the `full` policy.
    compile: CompileMode = "auto"
    compile_backend: str = Field("inductor", min_length=1)
    # Text encoding on the prompt's real tokens instead of 512 padded ones (worker/text_encoding.py). Off: on an
    # H200 the 36-layer encoder is launch-bound at batch 1 and took 60 ms either way (BENCHMARKS.md).
    encode_unpadded: bool = False
    # Compatible queued jobs (same size, steps, guidance) rendered in one pipeline call: up to this many images
    # and this many pixels in all (4 Mpx: 4 images at 1024x1024, 16 at 512x512). Off (1) by default: a batched
    # image matches its seed rendered alone only to rounding (one 8-bit level on a CPU), so its bytes would
    # depend on what it was batched with; the gain measured with compiled blocks was 4-5 % at 1024x1024.
    batch_max_images: int = Field(1, ge=1, le=64)
    batch_max_pixels: int = Field(4 * 1024 * 1024, ge=256 * 256)
    # Issue 15. bf16: the exact tier (same seed, same bytes). fp8: the main DiT blocks' linear layers in FP8 with
    # rowwise scales (worker/precision.py), faster and not exact; such a worker takes only jobs that ask for fp8.
    precision: Precision = "bf16"
    # Stacked q/k/v and w1/w3 projections and real-valued RoPE in the DiT blocks (worker/fusion.py); auto = with
    # compile. With the LoRA adapter slot (lora_mode slot) the blocks stay unfused: it wraps the modules by name.
    fuse: CompileMode = "auto"
    # Compiled kernels kept in DATA_DIR/compile-cache: a second start loads them instead of compiling again.
    compile_cache: bool = True
    # Threads that encode, store and record finished jobs while the GPU renders the next; 0 = inline.
    finish_threads: int = Field(2, ge=0, le=16)

    worker_name: str | None = None
    heartbeat_seconds: float = Field(5.0, gt=0, le=300)
    worker_offline_after_seconds: float = Field(30.0, gt=0)
    reconcile_lost_after_seconds: float = Field(60.0, gt=0)
    reconcile_every_seconds: float = Field(10.0, gt=0)
    # Several API replicas: the background loops run in the one holding this Redis lease (control/leader.py);
    # when it dies, another takes over within this many seconds (plus one renewal, a fifth of it).
    leader_lease_seconds: float = Field(5.0, ge=1, le=300)
    max_attempts: int = Field(3, ge=1, le=100)

    # The queue (broker_config.celeryconfig is built from these). Batch rows wait in `<queue>.bulk`.
    queue: str = Field("render", min_length=1, max_length=200)
    # Webhooks go out from their own light worker (`zfarm webhooks`): a slow receiver never holds a GPU.
    webhook_queue: str = Field("webhooks", min_length=1, max_length=200)
    job_time_limit_seconds: int = Field(1800, ge=10, le=86400)
    # Loading a 10B-parameter pipeline in the worker child takes minutes, not Celery's default 4 s.
    worker_start_timeout_seconds: float = Field(900.0, gt=0)
    # `zfarm up`'s warm stop waits this long for running jobs to finish, then cuts them off (they run again).
    stop_timeout_seconds: float = Field(120.0, gt=0, le=86400)

    # Used when a job asks for guidance > 0 and sends no negative prompt (guidance 0 ignores negative prompts).
    default_negative_prompt: str | None = Field(None, min_length=1, max_length=4000)

    fault_injection: bool = False
    max_prompt_chars: int = Field(4000, ge=1, le=100_000)
    max_pixels: int = Field(2048 * 2048, ge=256 * 256, le=2048 * 2048)
    # Routing by card (core/capability.py): images over large_pixels go to the large queues, which only workers
    # whose max pixels exceed it read. The same value on every host. worker_max_pixels: what this worker's card
    # takes; unset = from its VRAM (32 GiB and more: max_pixels; less: large_pixels; no GPU: max_pixels).
    large_pixels: int = Field(DEFAULT_LARGE_PIXELS, ge=256 * 256, le=2048 * 2048)
    worker_max_pixels: int | None = Field(None, ge=256 * 256, le=2048 * 2048)

    # Security and fairness. `zfarm up` turns auth off only when the API binds a loopback address.
    auth: bool = True
    max_queued_jobs_per_tenant: int = Field(10_000, ge=1)
    submits_per_minute_per_tenant: int = Field(600, ge=1)
    max_json_bytes: int = Field(256 * 1024, ge=1024)
    # Slow clients (api/serving.py, api/body_limit.py): a request head must arrive within this many seconds of
    # the connection opening (or of the previous answer), a body within its own deadline (408 past either);
    # an idle kept-alive connection is closed after the third.
    request_head_timeout_seconds: float = Field(10.0, gt=0, le=600)
    request_body_timeout_seconds: float = Field(120.0, gt=0, le=3600)
    keep_alive_timeout_seconds: int = Field(5, ge=1, le=600)
    # Server-sent event streams one tenant may hold open on one API process (429 with Retry-After past it).
    max_event_streams_per_tenant: int = Field(20, ge=1, le=10_000)

    # Webhooks: signed with HMAC-SHA256 under this secret; retried with exponential backoff.
    webhook_secret: str | None = Field(None, min_length=16)
    webhook_max_attempts: int = Field(8, ge=1, le=50)
    webhook_backoff_seconds: float = Field(2.0, gt=0, le=300)
    # The whole of one delivery attempt (resolve, connect, send, answer), not per read: a receiver that
    # trickles bytes cannot hold a sender thread longer than this.
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120)
    # Receivers on loopback, private or link-local addresses are refused unless their network is listed here
    # (CIDRs, comma separated): a tenant's callback_url must not reach the farm's own network.
    webhook_allow_networks: str | None = None
    # Deliveries of one tenant in flight at once across the senders; the rest wait their turn without
    # holding a thread, so one tenant's slow receiver cannot delay another tenant's webhooks.
    webhook_tenant_concurrency: int = Field(2, ge=1, le=1000)
    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    # Input images (issue 12): the pixels an uploaded image may declare, checked before a pixel is decoded.
    max_asset_pixels: int = Field(25_000_000, ge=256 * 256, le=200_000_000)

    # Catalog campaigns (batches).
    presets: dict[str, Preset] = Field(default_factory=dict)  # JSON; added to the shipped ones, same name wins
    max_batch_rows: int = Field(50_000, ge=1, le=1_000_000)
    # Columns of a catalog, checked on the header before any row is read: a row costs memory per cell, and a
    # 10,000-column file costs ~20x its size once read. Marketplace flat files have a few hundred at most.
    max_catalog_columns: int = Field(500, ge=8, le=10_000)
    # Bulk job ids kept in Redis at once (the rest wait in SQL and are fed in by turns between batches).
    # Unset: two per live worker, at least 2. Smaller means finer fairness, larger means less idle risk.
    bulk_queue_depth: int | None = Field(None, ge=1, le=10_000)
    # The dispatcher's timer round; it also runs a round whenever a worker takes a bulk id (control/dispatcher.py).
    dispatch_every_seconds: float = Field(0.5, gt=0, le=60)

    # LoRA adapters (issue 13). merge: a job's adapters are added into the transformer's weights in place, from a
    # pristine copy kept on the device (its size: the targeted weights, ~11.5 GiB for Z-Image), and rendering costs
    # what it costs without adapters. slot: one PEFT adapter slot of rank `lora_slot_rank` on every linear module
    # (the adapters of one job, added up, must fit in it), no extra copy, a slower render, no fused blocks.
    # auto: merge under the memory policy full when the card has room for the copy, the slot otherwise. Either way
    # a switch with compiled blocks is a copy into existing tensors, never a recompile. lora_slot_rank 0 turns
    # adapters off. The last `lora_device_cache` adapters stay on the GPU, files on the worker's disk.
    lora_mode: LoraMode = "auto"
    max_lora_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    lora_slot_rank: int = Field(64, ge=0, le=768)
    lora_device_cache: int = Field(4, ge=1, le=64)
    lora_disk_cache_bytes: int = Field(20 * 1024**3, ge=1024 * 1024)

    @field_validator("model")
    @classmethod
    def _model_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model must be a Hugging Face repo id, a local directory or 'tiny' (got '')")
        return value

    @field_validator("presets")
    @classmethod
    def _preset_names(cls, value: dict[str, Preset]) -> dict[str, Preset]:
        for name in value:
            if not re.fullmatch(PRESET_NAME, name):
                raise ValueError(f"preset name must match {PRESET_NAME} (got {name!r})")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", value):
            raise ValueError(f"public_url must be an http(s) URL like https://farm.example.com (got {value!r})")
        return value

    @field_validator("database_url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"must be a URL with a scheme, like postgresql+psycopg://host/zfarm (got {value!r})")
        return value

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_s3_url(value)  # raises naming the value and the rule
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint_scheme(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(f"s3_endpoint_url must be an http:// or https:// URL (got {value!r})")
        return value

    @model_validator(mode="after")
    def _presigned_needs_bucket(self) -> FarmSettings:
        if self.presigned_urls and not self.storage_url:
            raise ValueError(
                "presigned_urls=true needs ZFARM_STORAGE_URL=s3://...: files in the local data directory have no "
                "links of their own (the API serves them)"
            )
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url must start with redis://, rediss:// or unix:// (got {value!r})")
        return value

    @property
    def visibility_timeout(self) -> int:
        # Longer than the hard time limit, or Redis would hand a still-running job to a second worker.
        return self.job_time_limit_seconds + 300

    @property
    def bulk_queue(self) -> str:
        return bulk_queue_name(self.queue)

    @property
    def worker_queues(self) -> tuple[str, str]:
        """What a worker of this precision reads: its tier's interactive queue first, then its bulk queue."""
        interactive = precision_queue(self.queue, self.precision)
        return interactive, bulk_queue_name(interactive)

    @field_validator("webhook_allow_networks")
    @classmethod
    def _networks(cls, value: str | None) -> str | None:
        parse_networks(value)  # raises naming the bad item
        return value

    @property
    def webhook_allow(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.webhook_allow_networks)

    @property
    def api_is_loopback(self) -> bool:
        return self.api_host in ("127.0.0.1", "localhost", "::1")

    @property
    def resolved_public_url(self) -> str:
        """Where people and programs reach the API (image links in webhooks use it)."""
        return (self.public_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / data_layout.DATABASE_FILE).resolve()}"

    @property
    def resolved_redis_url(self) -> str:
        return self.redis_url or "redis://127.0.0.1:6379/0"

    @property
    def storage_dir(self) -> Path:
        return (self.data_dir / data_layout.IMAGES_DIR).resolve()

    @property
    def lora_cache_dir(self) -> Path:
        return (self.data_dir / data_layout.LORA_CACHE_DIR).resolve()

    @property
    def compile_cache_dir(self) -> Path | None:
        return (self.data_dir / data_layout.COMPILE_CACHE_DIR).resolve() if self.compile_cache else None

    @property
    def models_dir(self) -> Path:
        return (self.data_dir / data_layout.MODEL_CACHE_DIR).resolve()

    @property
    def all_presets(self) -> dict[str, Preset]:
        return {**SHIPPED, **self.presets}

    @property
    def is_tiny_model(self) -> bool:
        return self.model == TINY_MODEL


@lru_cache(maxsize=1)
def get_settings() -> FarmSettings:
    return FarmSettings()
