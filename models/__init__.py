"""SQLAlchemy models and session helpers; imports nothing else of zfarm's."""

from models.api_keys import ApiKey
from models.assets import Asset
from models.base import Base
from models.batches import Batch, PromptTemplate
from models.db import make_engine, make_session_factory
from models.jobs import Image, Job, Lane
from models.loras import Lora
from models.statuses import FINAL_STATUSES, JobStatus
from models.webhooks import DeliveryState, WebhookDelivery
from models.workers import Worker, WorkerState

__all__ = [
    "ApiKey",
    "Asset",
    "Base",
    "Batch",
    "DeliveryState",
    "Image",
    "Job",
    "FINAL_STATUSES",
    "JobStatus",
    "Lane",
    "Lora",
    "PromptTemplate",
    "WebhookDelivery",
    "Worker",
    "WorkerState",
    "make_engine",
    "make_session_factory",
]
