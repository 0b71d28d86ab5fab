"""Product cutouts for the demo, drawn here with Pillow: a bottle, a mug and a box on transparent backgrounds.

Drawn at 3x and scaled down with Lanczos, so their edges are anti-aliased (partly transparent), as the cutouts
of real product photos are. They stand in for a team's own photos: the demo places them in generated scenes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

SCALE = 3
Draw = Callable[[ImageDraw.ImageDraw, int], None]


def _bottle(d: ImageDraw.ImageDraw, s: int) -> None:
    green, glass = (28, 110, 62, 255), (60, 150, 95, 255)
    d.rounded_rectangle((60 * s, 170 * s, 220 * s, 560 * s), radius=45 * s, fill=green)
    d.polygon([(95 * s, 180 * s), (185 * s, 180 * s), (160 * s, 95 * s), (120 * s, 95 * s)], fill=green)
    d.rectangle((120 * s, 40 * s, 160 * s, 100 * s), fill=green)
    d.rectangle((112 * s, 20 * s, 168 * s, 50 * s), fill=(180, 150, 60, 255))  # cap
    d.rectangle((80 * s, 190 * s, 95 * s, 540 * s), fill=glass)  # highlight
    d.rectangle((75 * s, 290 * s, 205 * s, 430 * s), fill=(245, 238, 220, 255))  # label
    d.text((98 * s, 340 * s), "ZFARM", fill=(28, 60, 40, 255), font_size=28 * s)


def _mug(d: ImageDraw.ImageDraw, s: int) -> None:
    blue = (40, 80, 170, 255)
    d.ellipse((300 * s, 140 * s, 430 * s, 330 * s), outline=blue, width=34 * s)  # handle
    d.rounded_rectangle((60 * s, 100 * s, 350 * s, 420 * s), radius=30 * s, fill=blue)
    d.ellipse((60 * s, 80 * s, 350 * s, 130 * s), fill=(30, 60, 130, 255))  # rim
    d.ellipse((75 * s, 88 * s, 335 * s, 122 * s), fill=(90, 55, 35, 255))  # coffee
    d.rectangle((110 * s, 200 * s, 300 * s, 290 * s), fill=(250, 250, 250, 255))
    d.text((135 * s, 228 * s), "MORNING", fill=blue, font_size=26 * s)


def _box(d: ImageDraw.ImageDraw, s: int) -> None:
    front = [(40 * s, 160 * s), (300 * s, 160 * s), (300 * s, 440 * s), (40 * s, 440 * s)]
    top = [(40 * s, 160 * s), (140 * s, 70 * s), (400 * s, 70 * s), (300 * s, 160 * s)]
    side = [(300 * s, 160 * s), (400 * s, 70 * s), (400 * s, 350 * s), (300 * s, 440 * s)]
    d.polygon(front, fill=(196, 140, 80, 255))
    d.polygon(top, fill=(222, 176, 118, 255))
    d.polygon(side, fill=(160, 108, 58, 255))
    d.rectangle((150 * s, 160 * s, 190 * s, 440 * s), fill=(230, 220, 200, 255))  # tape
    d.text((70 * s, 300 * s), "FRAGILE", fill=(150, 30, 30, 255), font_size=30 * s)


CUTOUTS: dict[str, tuple[tuple[int, int], Draw]] = {
    "bottle.png": ((280, 600), _bottle),
    "mug.png": ((460, 460), _mug),
    "box.png": ((440, 480), _box),
}


def draw_cutout(size: tuple[int, int], draw: Draw) -> Image.Image:
    big = Image.new("RGBA", (size[0] * SCALE, size[1] * SCALE), (0, 0, 0, 0))
    draw(ImageDraw.Draw(big), SCALE)
    return big.resize(size, Image.Resampling.LANCZOS)


def write_cutouts(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (size, draw) in CUTOUTS.items():
        path = directory / name
        draw_cutout(size, draw).save(path)
        paths.append(path)
    return paths
