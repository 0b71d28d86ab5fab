"""A job's `loras` resolved at submission: each name to the adapter file (sha256) the job will render with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.settings import FarmSettings
from core.token_window import MAX_TOKENS, count_tokens, load_tokenizer
from models.loras import Lora, prompt_with_triggers, visible


@dataclass(frozen=True)
class LoraProblem(Exception):
    field: str
    value: Any
    rule: str


def resolve(
    refs: Sequence[Mapping[str, Any]],
    adapters: Mapping[str, Lora],
    slot_rank: int,
    field: str = "loras",
    precision: str = "bf16",
) -> list[dict[str, Any]]:
    """[{name, sha256, scale, rank, trigger_words}] in the order asked; LoraProblem names the first that fails."""
    if not refs:
        return []
    names = [ref["name"] for ref in refs]
    if slot_rank == 0:
        raise LoraProblem(field, names, "this farm runs without LoRA adapters (ZFARM_LORA_SLOT_RANK=0)")
    if precision != "bf16":
        # The fp8 tier's quantized layers hold no adapter slot (worker/adapters.py): styled jobs render in bf16.
        raise LoraProblem(field, names, f"LoRA adapters render on the bf16 tier only (this job asks {precision})")
    out: list[dict[str, Any]] = []
    for i, ref in enumerate(refs):
        row = adapters.get(ref["name"])
        if row is None:
            known = ", ".join(sorted(adapters)[:20]) or "none"
            raise LoraProblem(f"{field}.{i}.name", ref["name"], f"no adapter by this name (yours: {known})")
        scale = ref.get("scale")
        out.append(
            {
                "name": row.name,
                "sha256": row.sha256,
                "scale": float(row.default_scale if scale is None else scale),
                "rank": row.rank,
                "trigger_words": row.trigger_words,
            }
        )
    total = sum(lora["rank"] for lora in out)
    if total > slot_rank:
        ranks = " + ".join(f"{lora['name']} {lora['rank']}" for lora in out)
        rule = f"the adapters' ranks add up to more than this farm's slot holds ({slot_rank}, ZFARM_LORA_SLOT_RANK)"
        raise LoraProblem(field, ranks, rule)
    return out


def check_trigger_window(prompt: str, loras: list[dict[str, Any]], settings: FarmSettings) -> LoraProblem | None:
    """With trigger words prepended the prompt is longer: it must still fit the text encoder's window."""
    tokenizer = load_tokenizer(settings.model, settings.model_revision)
    if tokenizer is None:
        return None  # the worker counts before rendering and refuses there
    text = prompt_with_triggers(prompt, loras)
    if (n := count_tokens(tokenizer, text)) > MAX_TOKENS:
        rule = f"with the trigger words the prompt is {n} tokens; the text encoder reads at most {MAX_TOKENS}"
        return LoraProblem("add_trigger_words", True, rule)
    return None


def job_loras(session: Any, tenant: str | None, body: Any, settings: FarmSettings) -> list[dict[str, Any]]:
    """A single job's adapters, resolved for its tenant; LoraProblem when one cannot be used."""
    if not body.loras:
        return []
    refs = [ref.model_dump() for ref in body.loras]
    resolved = resolve(refs, visible(session, tenant), settings.lora_slot_rank, precision=body.precision)
    wants_words = body.add_trigger_words and not body.truncate_prompt
    if wants_words and (problem := check_trigger_window(body.prompt, resolved, settings)) is not None:
        raise problem
    return resolved


def same_loras(asked: Sequence[Any], stored: Sequence[Mapping[str, Any]] | None) -> bool:
    """Whether a repeated request (Idempotency-Key) asks for the adapters a job was made with."""
    stored = stored or []
    pairs = zip(asked, stored, strict=False)
    same = all(a.name == s["name"] and (a.scale is None or float(a.scale) == s["scale"]) for a, s in pairs)
    return len(asked) == len(stored) and same
