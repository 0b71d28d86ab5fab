from __future__ import annotations

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class BrokerSettings(BaseSettings):
    """The queue side of the `ZFARM_*` variables (the same names `zfarm.settings` reads)."""

    model_config = SettingsConfigDict(env_prefix="ZFARM_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    queue: str = "render"
    # Webhooks go out from their own light worker (`zfarm webhooks`): a slow receiver never holds a GPU.
    webhook_queue: str = "webhooks"
    job_time_limit_seconds: int = Field(1800, ge=10, le=86400)
    # Loading a 10B-parameter pipeline in the worker child takes minutes, not Celery's default 4 s.
    worker_start_timeout_seconds: float = Field(900.0, gt=0)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url must start with redis://, rediss:// or unix:// (got {value!r})")
        return value

    @property
    def visibility_timeout(self) -> int:
        # Longer than the hard time limit, or Redis would hand a still-running job to a second worker.
        return self.job_time_limit_seconds + 300


def bulk_queue_name(queue: str) -> str:
    """Batch jobs wait here; workers read the interactive queue first (see celeryconfig)."""
    return f"{queue}.bulk"


@lru_cache(maxsize=1)
def get_broker_settings() -> BrokerSettings:
    return BrokerSettings()
