"""Checks that need the farm's configuration: pixel budget and the text encoder's token window."""

from __future__ import annotations

from fastapi import HTTPException

from api.schemas import JobCreate, rendition_problems
from core.settings import FarmSettings
from core.token_window import MAX_TOKENS, count_tokens, load_tokenizer


def problem(field: str, value: object, rule: str) -> dict[str, object]:
    return {"field": field, "value": value, "rule": rule, "message": f"{field}: {rule} (got {value!r})"}


def refuse(field: str, value: object, rule: str) -> HTTPException:
    return HTTPException(422, detail=[problem(field, value, rule)])


def check_job(body: JobCreate, settings: FarmSettings) -> None:
    pixels = body.width * body.height
    if pixels > settings.max_pixels:
        raise refuse("width*height", pixels, f"must be at most {settings.max_pixels} pixels on this farm")
    if problems := rendition_problems(body.width, body.height, body.renditions):
        raise HTTPException(422, detail=[problem(*p) for p in problems])
    tokenizer = load_tokenizer(settings.model, settings.model_revision)
    if tokenizer is None or body.truncate_prompt:
        return  # no tokenizer on this host: the worker counts before rendering and refuses there
    for field in ("prompt", "negative_prompt"):
        text = getattr(body, field)
        if text and (n := count_tokens(tokenizer, text)) > MAX_TOKENS:
            raise refuse(
                field,
                f"{text[:60]}...",
                f"is {n} tokens with the chat template; the text encoder "
                f"reads at most {MAX_TOKENS} (send truncate_prompt: true to cut it)",
            )
