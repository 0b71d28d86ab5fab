"""The client's typed records name exactly the fields the API sends, and the generated sync client is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

import pytest
from pydantic import BaseModel

from api.batch_schemas import BatchCreated as BatchCreatedOut
from api.batch_schemas import BatchOut
from api.image_schemas import AssetOut, InputOut
from api.schemas import (
    ImageOut,
    JobLora,
    JobOut,
    JobProgress,
    LoraOut,
    RenditionOut,
    WebhookOut,
    WorkerAdapter,
    WorkerOut,
)
from zfarm.client import types

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("typed", "schema"),
    [
        (types.Job, JobOut),
        (types.Batch, BatchOut),
        (types.BatchCreated, BatchCreatedOut),
        (types.Worker, WorkerOut),
        (types.Image, ImageOut),
        (types.Rendition, RenditionOut),
        (types.Progress, JobProgress),
        (types.Webhook, WebhookOut),
        (types.Lora, LoraOut),
        (types.JobLora, JobLora),
        (types.WorkerAdapter, WorkerAdapter),
        (types.Asset, AssetOut),
        (types.Input, InputOut),
    ],
    ids=lambda x: x.__name__,
)
def test_typed_record_has_the_fields_of_the_api_schema(typed: type, schema: type[BaseModel]) -> None:
    assert set(get_type_hints(typed)) == set(schema.model_fields)


def test_generated_sync_client_is_current() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/generate_sync_client.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
