from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from sqlalchemy import select

from api.auth import AdminDep
from api.deps import SessionDep, SettingsDep
from api.schemas import WorkerList, WorkerOut
from models import Worker, WorkerState
from models.base import utcnow
from models.loras import held_adapters

router = APIRouter(prefix="/v1/workers", tags=["workers"])


@router.get("", response_model=WorkerList)
def list_workers(session: SessionDep, settings: SettingsDep, _admin: AdminDep) -> WorkerList:
    stale_before = utcnow() - timedelta(seconds=settings.worker_offline_after_seconds)
    out = []
    for w in session.scalars(select(Worker).order_by(Worker.name)):
        fields = {name: getattr(w, name) for name in WorkerOut.model_fields if name != "adapters"}
        item = WorkerOut(**fields, adapters=held_adapters(w.adapters))
        if w.last_heartbeat < stale_before:
            item.state = WorkerState.OFFLINE  # no heartbeat: whatever it last said, it is gone
        out.append(item)
    return WorkerList(workers=out)
