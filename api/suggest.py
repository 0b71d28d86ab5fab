""" "Did you mean ...?" for a name that is not known: a column, a preset, a request field."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel


def nearest(name: str, known: Iterable[str]) -> str | None:
    choices = list(known)
    folded = {c.lower(): c for c in choices}
    if name.lower() in folded:  # only the case differs
        return folded[name.lower()]
    found = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`; did you mean 'width'?` when a known name is close, else nothing."""
    match = nearest(name, known)
    return f"; did you mean {match!r}?" if match is not None and match != name else ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def fields_at(model: type[BaseModel] | None, loc: Sequence[Any]) -> list[str]:
    """The field names a request model allows where `loc` points (its last part being the unknown name)."""
    current = [model] if model is not None else []
    for part in loc[:-1]:
        if isinstance(part, int):
            continue  # an index into a list: the item's model is the list's
        current = [m for c in current if part in c.model_fields for m in _models_in(c.model_fields[part].annotation)]
    return sorted({name for c in current for name in c.model_fields})
