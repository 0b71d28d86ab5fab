"""The image-mode options shared by `zfarm submit` and `zfarm batch` (issue 12)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

MODES = ("text", "img2img", "inpaint", "place")
_PLACEMENT = {"fit": "fit", "anchor": "anchor", "offset_x": "offset_x", "offset_y": "offset_y"}

OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option("--mode", type=click.Choice(MODES), default=None, help="text (default), img2img, inpaint or place."),
    click.option("--strength", type=float, default=None, help="0 < s <= 1: img2img 0.6, inpaint and place 1.0."),
    click.option("--mask-blur", type=int, default=None, help="inpaint with a mask: feather the seam, pixels."),
    click.option("--mask-grow", type=int, default=None, help="inpaint, place: paint this far under the seam."),
    click.option("--fit", type=float, default=None, help="place: the product fits in fit*width x fit*height (0.7)."),
    click.option("--anchor", type=click.Choice(["center", "bottom"]), default=None, help="place: center or bottom."),
    click.option("--offset-x", type=int, default=None, help="place: move the product right (negative: left), px."),
    click.option("--offset-y", type=int, default=None, help="place: move the product down (negative: up), px."),
]


def image_mode_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(OPTIONS):
        command = option(command)
    return command


def mode_fields(params: dict[str, Any]) -> dict[str, Any]:
    """Takes the image-mode options out of a command's parameters: the request fields they make."""
    placement = {field: params.pop(name) for name, field in _PLACEMENT.items()}
    fields = {name: params.pop(name) for name in ("mode", "strength", "mask_blur", "mask_grow")}
    given = {k: v for k, v in placement.items() if v is not None}
    if given:
        fields["placement"] = given
    return {k: v for k, v in fields.items() if v is not None}
