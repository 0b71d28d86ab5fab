"""What a queued job needs from the worker that takes it: the `requires` label of the backlog metrics.

Today that is its precision tier (bf16 or fp8, core/queues.py): a worker of one tier never takes the other's
jobs, so a backlog of fp8 jobs calls for fp8 workers. Routing by more capabilities (GPU memory, a host) adds
to this one expression, for the metrics and anything else that groups the backlog.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, literal

from core.queues import DEFAULT_PRECISION
from models.jobs import Job


def required_capability() -> ColumnElement[Any]:
    return func.coalesce(Job.precision, literal(DEFAULT_PRECISION))
