"""The prompt helpers: the farm's default negative prompt, and `enhance` (lighting and quality words by rules).

No model runs: the words come from the prompt's subject and the preset, and only words the prompt lacks are
added. What was changed is listed in the job's `adjustments`; the prompt as sent stays in `requested_prompt`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# (subject, words that name it, the lighting that suits it), first match wins; products are the default.
SUBJECTS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("food", ("food", "dish", "cake", "bread", "coffee", "tea", "pizza", "salad", "fruit", "dessert", "meal"),
     "warm soft window light"),
    ("person", ("person", "woman", "man", "model", "portrait", "face", "child", "people"),
     "soft key light with gentle fill"),
    ("outdoor", ("beach", "forest", "street", "mountain", "garden", "outdoor", "outdoors", "city", "park", "lake"),
     "natural daylight"),
    ("product", (), "soft diffused studio lighting"),
)  # fmt: skip
LIGHTING_WORDS = re.compile(
    r"\b(light|lighting|lit|lights|sunlight|daylight|sunset|shadow|shadows|glow|backlit)\b", re.I
)
QUALITY = ("sharp focus", "high detail")
# Presets whose pictures are looked at small or zoomed: what matters there.
PRESET_WORDS = {
    "thumbnail-512": ("clear silhouette",),
    "square-2000": ("crisp fine texture",),
    "banner-1536": ("wide composition",),
}


@dataclass
class Prepared:
    prompt: str
    negative_prompt: str | None
    adjustments: list[str] = field(default_factory=list)


def _subject(prompt: str) -> tuple[str, str]:
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    for name, keys, lighting in SUBJECTS:
        if not keys or words & set(keys):
            return name, lighting
    raise AssertionError("unreachable: the last subject matches everything")


def enhance_words(prompt: str, preset: str | None) -> tuple[list[str], str]:
    """The words `enhance` adds to this prompt (none it already has), and the subject the rules saw."""
    subject, lighting = _subject(prompt)
    lower = prompt.lower()
    added = [] if LIGHTING_WORDS.search(prompt) else [lighting]
    added += [w for w in (*QUALITY, *PRESET_WORDS.get(preset or "", ())) if w not in lower]
    return added, subject


def prepare(
    prompt: str,
    negative_prompt: str | None,
    guidance_scale: float,
    *,
    enhance: bool,
    preset: str | None,
    default_negative: str | None,
) -> Prepared:
    out = Prepared(prompt, negative_prompt)
    if enhance:
        added, subject = enhance_words(prompt, preset)
        if added:
            out.prompt = f"{prompt.rstrip().rstrip(',.')}, {', '.join(added)}"
            seen = f"subject {subject}" + (f", preset {preset}" if preset else "")
            out.adjustments.append(f"enhance: added {', '.join(added)!r} ({seen})")
        else:
            out.adjustments.append("enhance: nothing to add (the prompt names its lighting and quality)")
    if guidance_scale > 0 and not (negative_prompt or "").strip() and default_negative:
        out.negative_prompt = default_negative
        out.adjustments.append("negative_prompt: the farm's default (ZFARM_DEFAULT_NEGATIVE_PROMPT)")
    return out
