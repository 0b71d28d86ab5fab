from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from control.enqueue import Enqueuer
from core.settings import FarmSettings
from core.storage import Storage


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_storage(request: Request) -> Storage:
    return request.app.state.storage


def get_enqueuer(request: Request) -> Enqueuer:
    return request.app.state.enqueuer


def get_farm_settings(request: Request) -> FarmSettings:
    return request.app.state.settings


SessionDep = Annotated[Session, Depends(get_db)]
StorageDep = Annotated[Storage, Depends(get_storage)]
EnqueuerDep = Annotated[Enqueuer, Depends(get_enqueuer)]
SettingsDep = Annotated[FarmSettings, Depends(get_farm_settings)]
