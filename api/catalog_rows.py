"""Turning catalog rows into job parameters: key, template, presets, per-row overrides, seeds.

Precedence, lowest first: the job defaults, the batch's preset, the batch's `defaults`, the row's `preset`
column, the row's own override columns. Every problem found is reported with its row and column.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from tokenizers import Tokenizer

from api.catalog_files import Catalog, CatalogRow
from api.catalog_images import MODE_RULES, column_of, input_cells, parse_mode_cell, placement_overrides
from api.job_identity import derive_seed
from api.lora_refs import LoraProblem, resolve
from api.prompt_helpers import prepare
from api.prompt_template import Template
from api.refusals import Problems
from api.schemas import JobCreate, rendition_problems
from api.suggest import did_you_mean
from core.presets import Preset
from core.token_window import MAX_TOKENS, chat_wrapped
from models.loras import Lora, prompt_with_triggers

# Reserved columns override the job's parameters per row; `format` sets output_format.
RESERVED = {
    "width": "width",
    "height": "height",
    "seed": "seed",
    "negative_prompt": "negative_prompt",
    "num_images": "num_images",
    "preset": "preset",
    "format": "output_format",
    "steps": "steps",
    "guidance_scale": "guidance_scale",
    "lora": "loras",  # `name` or `name:scale`, several separated by commas
    # image modes (api/catalog_images.py): the batch's values, per row
    "mode": "mode",
    "strength": "strength",
    "mask_blur": "mask_blur",
    "mask_grow": "mask_grow",
}
_INT_FIELDS = {"width", "height", "seed", "num_images", "steps"}
_WHOLE = re.compile(r"^[+-]?\d+$")
_BAD_KEY = re.compile(r"[/\\\x00-\x1f\x7f]")
MAX_KEY_CHARS = 200


@dataclass(frozen=True)
class JobSpec:
    row: int
    line: int | None
    key: str
    params: dict[str, Any]  # every JobCreate field, validated
    inputs: dict[str, str] = dataclasses.field(default_factory=dict)  # image modes: the row's image and mask cells
    size_given: bool = False  # width or height set by the row itself
    columns: frozenset[str] = frozenset()  # the row's non-empty cells: a refusal names the column that set a value


@dataclass(frozen=True)
class RowRules:
    template: Template
    key_column: str
    base: dict[str, Any]  # job defaults < batch preset < batch defaults
    presets: Mapping[str, Preset]
    batch_seed: int
    max_pixels: int
    truncate_prompt: bool = False
    preset: str | None = None  # the batch's preset, already folded into `base`; kept for the record
    adapters: Mapping[str, Lora] | None = None  # the LoRA adapters the tenant may name, by name
    slot_rank: int = 0  # ZFARM_LORA_SLOT_RANK: the adapters of one job add up to at most this rank
    enhance: bool = False  # the prompt helpers (api/prompt_helpers.py), per row
    default_negative: str | None = None


def check_columns(catalog: Catalog, rules: RowRules, problems: Problems) -> tuple[bool, bool]:
    """Problems that would fail every row, each named once: (all placeholders known, key column present)."""
    known = ", ".join(catalog.columns) or "none"
    placeholders_known = True
    for name in rules.template.columns:
        if name not in catalog.columns:
            placeholders_known = False
            problems.add(
                f"unknown placeholder: the catalog has no column {name!r} (its columns: {known})"
                + did_you_mean(name, catalog.columns),
                field="template",
                value="{" + name + "}",
            )
    has_key = rules.key_column in catalog.columns
    if not has_key:
        problems.add(
            f"the catalog has no key column {rules.key_column!r} (its columns: {known}); set key_column"
            + did_you_mean(rules.key_column, catalog.columns),
            field="key_column",
            value=rules.key_column,
        )
    return placeholders_known, has_key


def build_jobs(
    catalog: Catalog, rules: RowRules, tokenizer: Tokenizer | None = None, problems: Problems | None = None
) -> list[JobSpec]:
    """Every row's job, or a refusal listing every problem of the catalog (and any found before it) up to the cap."""
    problems = problems if problems is not None else Problems()
    placeholders_known, has_key = check_columns(catalog, rules, problems)
    specs: list[JobSpec] = []
    rows_by_key: dict[str, list[int]] = {}
    for row in catalog.rows:
        key, spec = _build_row(row, rules, problems, check_key=has_key, check_prompt=placeholders_known)
        if spec is not None:
            specs.append(spec)
        if key is not None:  # a key repeated on a row with other problems is a duplicate all the same
            rows_by_key.setdefault(key, []).append(row.number)
        if problems.full:
            break
    duplicates = {k: rows for k, rows in rows_by_key.items() if len(rows) > 1}
    if duplicates:
        listed = "; ".join(f"{k} (rows {', '.join(map(str, r))})" for k, r in list(duplicates.items())[:20])
        more = f"; and {len(duplicates) - 20} more" if len(duplicates) > 20 else ""
        problems.add(
            f"duplicate keys: each key names one item: {listed}{more}",
            column=rules.key_column,
            value=sorted(duplicates)[:20],
        )
    if tokenizer is not None and not rules.truncate_prompt and not problems.full:
        _check_token_window(specs, tokenizer, problems)
    problems.raise_if_any()
    return specs


def _build_row(
    row: CatalogRow, rules: RowRules, problems: Problems, check_key: bool = True, check_prompt: bool = True
) -> tuple[str | None, JobSpec | None]:
    """The row's key (when it has a valid one) and its job (when the whole row is valid)."""
    where = {"row": row.number, "line": row.line}
    before = len(problems.items)
    key = _key(row, rules.key_column, problems) if check_key else None
    overrides = _overrides(row, rules.presets, problems)
    prompt = rules.template.render(row.values)
    if check_prompt and not prompt.strip():
        used = ", ".join(rules.template.columns) or "none"
        problems.add(f"the rendered prompt is empty: the template's columns ({used}) are empty here", **where)
    if len(problems.items) > before or key is None:
        return key, None
    params = {**rules.base, **overrides, "prompt": prompt, "truncate_prompt": rules.truncate_prompt}
    if placement := placement_overrides(row, problems):
        params["placement"] = {**(params.get("placement") or {}), **placement}
    if len(problems.items) > before:
        return key, None
    if params.get("seed") is None:
        params["seed"] = derive_seed(rules.batch_seed, key)
    try:
        job = JobCreate.model_validate(params)
    except ValidationError as exc:
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "row"
            column = next(
                (c for c, f in RESERVED.items() if f == name and c in row.values), column_of(name, row.values)
            )
            rule = str(err["msg"]).removeprefix("Value error, ")
            problems.add(rule, column=column, field=None if column else name, value=err.get("input"), **where)
        return key, None
    try:
        loras = resolve(
            job.model_dump(include={"loras"})["loras"], rules.adapters or {}, rules.slot_rank, precision=job.precision
        )
    except LoraProblem as exc:
        column = "lora" if "loras" in overrides else None
        problems.add(
            exc.rule, column=column, field=None if column else "defaults." + exc.field, value=exc.value, **where
        )
        return key, None
    # A row's own width or height: img2img and inpaint rows otherwise take their image's size (the batch's
    # size is for its text and place rows).
    size_given = bool({"width", "height"} & overrides.keys())
    inputs = input_cells(row, job.mode)
    if job.mode in ("img2img", "inpaint") and not size_given:
        # Rendered at the image's own size: api/batch_images.py checks the size once the image is known.
        return key, _spec(row, key, job, loras, rules, inputs, size_given)
    if job.width * job.height > rules.max_pixels:
        problems.add(
            f"width*height must be at most {rules.max_pixels} pixels on this farm",
            field="width*height",
            value=job.width * job.height,
            **where,
        )
        return key, None
    too_large = rendition_problems(job.width, job.height, job.renditions)
    for field, value, rule in too_large:
        problems.add(rule, field=field, value=value, **where)
    if too_large:
        return key, None
    return key, _spec(row, key, job, loras, rules, inputs, size_given)


def _spec(
    row: CatalogRow,
    key: str,
    job: JobCreate,
    loras: list[dict[str, Any]],
    rules: RowRules,
    inputs: dict[str, str],
    size_given: bool,
) -> JobSpec:
    params = job.model_dump(exclude={"dedup", "preset", "enhance"})
    params = {**params, "loras": loras, **_helped(params, row, rules)}
    return JobSpec(row.number, row.line, key, params, inputs, size_given, _filled(row))


def _filled(row: CatalogRow) -> frozenset[str]:
    return frozenset(c for c, v in row.values.items() if v is not None and str(v).strip())


def _helped(params: dict[str, Any], row: CatalogRow, rules: RowRules) -> dict[str, Any]:
    """The row's prompt and negative prompt after the prompt helpers, and what they changed."""
    raw_preset = row.values.get("preset")
    preset = str(raw_preset).strip() if raw_preset not in (None, "") else rules.preset
    helped = prepare(
        params["prompt"],
        params["negative_prompt"],
        params["guidance_scale"],
        enhance=rules.enhance,
        preset=preset,
        default_negative=rules.default_negative,
    )
    return {
        "prompt": helped.prompt,
        "negative_prompt": helped.negative_prompt,
        "adjustments": helped.adjustments or None,
        "requested_prompt": params["prompt"] if helped.prompt != params["prompt"] else None,
    }


def _key(row: CatalogRow, column: str, problems: Problems) -> str | None:
    raw = row.values.get(column)
    key = "" if raw is None else str(raw).strip()
    where = {"row": row.number, "line": row.line, "column": column}
    if not key:
        problems.add("missing key: every row needs a value in the key column", **where)
        return None
    if len(key) > MAX_KEY_CHARS or _BAD_KEY.search(key) or key.startswith("."):
        problems.add(
            f"keys name files: at most {MAX_KEY_CHARS} characters, no '/', '\\\\' or control characters, "
            "and no leading '.'",
            value=key,
            **where,
        )
        return None
    return key


def _overrides(row: CatalogRow, presets: Mapping[str, Preset], problems: Problems) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # The row's preset first, so that the row's own columns beat it.
    for column in ("preset", *(c for c in RESERVED if c != "preset")):
        name, raw = RESERVED[column], row.values.get(column)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue  # an empty cell keeps the batch's value
        where = {"row": row.number, "line": row.line, "column": column, "value": raw}
        value = _parse(name, raw)
        if value is None:
            problems.add(_RULES[name], **where)
        elif name != "preset":
            out[name] = value
        elif value in presets:
            out.update(presets[value].parameters())
        else:
            rule = f"unknown preset: known presets are {', '.join(sorted(presets))}"
            problems.add(rule + did_you_mean(str(value), presets), **where)
    return out


_RULES = {
    "width": "must be a whole number",
    "height": "must be a whole number",
    "seed": "must be a whole number",
    "num_images": "must be a whole number",
    "steps": "must be a whole number",
    "guidance_scale": "must be a finite number",
    "output_format": "must be one of png, webp, jpeg",
    "negative_prompt": "must be text",
    "preset": "must be a preset name",
    "loras": "must be an adapter name or name:scale (a number), several separated by commas",
    **MODE_RULES,
}


def _lora_cell(text: str) -> list[dict[str, Any]] | None:
    """`brand-x` or `brand-x:0.8, other:0.5`: the row's adapters (they replace the batch's)."""
    refs: list[dict[str, Any]] = []
    for part in text.split(","):
        name, _, scale = part.strip().partition(":")
        if not name.strip():
            return None
        ref: dict[str, Any] = {"name": name.strip()}
        if scale.strip():
            try:
                ref["scale"] = float(scale)
            except ValueError:
                return None
            if not math.isfinite(ref["scale"]):
                return None
        refs.append(ref)
    return refs


def _parse(name: str, raw: Any) -> Any:
    if isinstance(raw, bool):
        return None
    if name in MODE_RULES:
        return parse_mode_cell(name, raw)
    if name in _INT_FIELDS:
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float):
            return int(raw) if raw.is_integer() else None
        text = str(raw).strip()
        return int(text) if _WHOLE.match(text) else None
    if name == "guidance_scale":
        try:
            value = float(str(raw).strip())
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    if name == "loras":
        return _lora_cell(str(raw))
    if name == "output_format":
        text = str(raw).strip().lower()
        return text if text in ("png", "webp", "jpeg") else None
    return str(raw).strip() if name == "preset" else str(raw)


TOKEN_CHUNK = 256  # prompts per encode_batch call: the encodings of 10,000 prompts at once take ~130 MiB


def _check_token_window(specs: list[JobSpec], tokenizer: Tokenizer, problems: Problems) -> None:
    # A few hundred prompts per call: the Rust tokenizer still encodes them in parallel, and only their
    # lengths are kept, so memory does not grow with the catalog.
    for field in ("prompt", "negative_prompt"):
        indexed = [(s, _encoded_text(s.params, field)) for s in specs if s.params.get(field)]
        for i in range(0, len(indexed), TOKEN_CHUNK):
            chunk = indexed[i : i + TOKEN_CHUNK]
            encodings = tokenizer.encode_batch([chat_wrapped(text) for _, text in chunk], add_special_tokens=False)
            lengths = [len(enc.ids) for enc in encodings]
            del encodings
            for (spec, _), n in zip(chunk, lengths, strict=True):
                if n > MAX_TOKENS:
                    problems.add(
                        f"is {n} tokens with the chat template; the text encoder reads at most {MAX_TOKENS} "
                        "(send truncate_prompt: true to cut it)",
                        field=field,
                        row=spec.row,
                        line=spec.line,
                    )
                    if problems.full:
                        return


def _encoded_text(params: Mapping[str, Any], field: str) -> str:
    # What the text encoder reads: with add_trigger_words the adapters' trigger words come first.
    if field == "prompt" and params.get("add_trigger_words"):
        return prompt_with_triggers(params["prompt"], params.get("loras"))
    return str(params[field])
