"""A single job's request as the farm renders it: its preset folded in, then the prompt helpers applied."""

from __future__ import annotations

from collections.abc import Mapping

from api.prompt_helpers import prepare
from api.refusals import refuse
from api.schemas import JobCreate
from api.suggest import did_you_mean
from core.presets import Preset
from core.settings import FarmSettings


def with_preset(body: JobCreate, presets: Mapping[str, Preset]) -> JobCreate:
    """The request with its preset folded in (fields it sets explicitly win) and `preset` cleared."""
    if body.preset is None:
        return body
    preset = presets.get(body.preset)
    if preset is None:
        rule = f"unknown preset: known presets are {', '.join(sorted(presets))}" + did_you_mean(body.preset, presets)
        raise refuse(rule, field="preset", value=body.preset).to_http()
    given = body.model_dump(exclude_unset=True, exclude={"preset"})
    return JobCreate.model_validate({**preset.parameters(), **given})


def resolve(body: JobCreate, settings: FarmSettings) -> tuple[JobCreate, list[str], str | None]:
    """(the request to render, what the farm changed in it, the prompt as sent when it was changed)."""
    preset = body.preset
    body = with_preset(body, settings.all_presets)
    helped = prepare(
        body.prompt,
        body.negative_prompt,
        body.guidance_scale,
        enhance=body.enhance,
        preset=preset,
        default_negative=settings.default_negative_prompt,
    )
    requested = body.prompt if helped.prompt != body.prompt else None
    body = body.model_copy(update={"prompt": helped.prompt, "negative_prompt": helped.negative_prompt})
    return body, helped.adjustments, requested
