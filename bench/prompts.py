"""Distinct product-photo prompts for the benchmarks: 18-24 words each, deterministic from the index."""

from __future__ import annotations

ITEMS = [
    "mug",
    "teapot",
    "lamp",
    "chair",
    "sneaker",
    "backpack",
    "watch",
    "vase",
    "candle",
    "headphones",
    "kettle",
    "bottle",
]
MATERIALS = ["ceramic", "glass", "walnut", "leather", "linen", "brass", "marble", "bamboo", "steel", "wool"]
COLORS = ["white", "black", "sage", "terracotta", "navy", "mustard", "charcoal", "ivory"]
SURFACES = ["oak table", "marble counter", "concrete floor", "linen cloth", "slate board", "white sweep"]
LIGHTS = ["soft morning light", "studio softbox lighting", "golden hour sun", "overcast daylight", "rim light"]
STYLES = ["minimalist catalog shot", "editorial still life", "lifestyle scene", "clean e-commerce packshot"]
TAIL = "sharp focus, 85mm lens, high detail, natural shadows"

VOCABULARY = sorted(
    {
        word
        for group in (ITEMS, MATERIALS, COLORS, SURFACES, LIGHTS, STYLES, [TAIL, "a on in with , . photo of"])
        for phrase in group
        for word in phrase.replace(",", " , ").split()
    }
)


def prompt(i: int) -> str:
    """The i-th prompt; no two indices below 960 give the same text."""
    item, material, color = ITEMS[i % 12], MATERIALS[(i // 12) % 10], COLORS[(i // 120) % 8]
    surface, light, style = SURFACES[i % 6], LIGHTS[(i // 6) % 5], STYLES[(i // 30) % 4]
    return f"{style} photo of a {color} {material} {item} on a {surface}, {light}, {TAIL}"
