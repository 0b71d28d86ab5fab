"""Prompt templates: plain `{column}` substitution, parsed with string.Formatter().parse.

No code runs: the template is split into literal text and column names once, and rendering joins the
pieces with the row's values. `str.format` is never called, so attribute access (`{a.b}`), indexing
(`{a[0]}`), conversions (`{a!r}`) and format specs (`{a:>10}`) are refused up front instead of being
evaluated. Literal braces are written doubled: `{{` and `}}`.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

from api.refusals import Problem, Refusal, refuse

TEMPLATE_PARTS = ("subject", "action", "lighting", "style", "quality")


@dataclass(frozen=True)
class Template:
    text: str
    pieces: tuple[tuple[str, str | None], ...]  # (literal text, column name or None)

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(name for _, name in self.pieces if name is not None))

    def render(self, values: Mapping[str, object]) -> str:
        out = []
        for literal, name in self.pieces:
            out.append(literal)
            if name is not None:
                value = values.get(name)
                out.append("" if value is None else str(value))
        return "".join(out)


def parse_template(text: str, field: str = "template") -> Template:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise refuse(f"is not a valid template: {exc} (write literal braces as {{{{ and }}}})", field=field) from exc
    pieces: list[tuple[str, str | None]] = []
    problems: list[Problem] = []  # every bad placeholder, not only the first
    for literal, name, spec, conversion in parsed:
        if name is None:
            pieces.append((literal, None))
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if name == "" or name.isdigit():
            problems.append(Problem("placeholders must name a column, like {sku}", field=field, value=shown))
        elif "." in name or "[" in name:
            rule = "attribute and index access are not allowed: use a plain {column}"
            problems.append(Problem(rule, field=field, value=shown))
        elif conversion or spec:
            rule = "conversions and format specs are not allowed: use a plain {column}"
            problems.append(Problem(rule, field=field, value=shown))
        pieces.append((literal, name.strip()))
    if problems:
        raise Refusal(problems)
    if not any(name for _, name in pieces) and not text.strip():
        raise refuse("must not be empty", field=field, value=text)
    return Template(text=text, pieces=tuple(pieces))


def compose_parts(parts: Mapping[str, str | None]) -> str:
    """[subject] + [pose/action] + [lighting] + [style] + [quality words], joined with commas."""
    return ", ".join(p.strip() for key in TEMPLATE_PARTS if (p := parts.get(key)) and p.strip())
