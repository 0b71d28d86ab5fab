from __future__ import annotations

from fastapi import APIRouter

from api.auth import PrincipalDep
from api.batch_schemas import PresetList, PresetOut
from api.deps import SettingsDep
from api.strict_route import StrictRoute
from core.presets import SHIPPED

router = APIRouter(prefix="/v1/presets", tags=["batches"], route_class=StrictRoute)


@router.get("", response_model=PresetList)
def list_presets(settings: SettingsDep, _principal: PrincipalDep) -> PresetList:
    """Shipped presets and those set in ZFARM_PRESETS (a configured preset replaces a shipped one of its name).

    Needs a key like every /v1 route (the README says so): the farm's presets are part of its setup."""
    return PresetList(
        presets=[
            PresetOut(name=name, shipped=name in SHIPPED and name not in settings.presets, **preset.model_dump())
            for name, preset in sorted(settings.all_presets.items())
        ]
    )
