"""The demo's second part (issue 12): three product cutouts drawn locally (a bottle, a mug, a box) placed in
generated scenes with mode `place`, plus a white-background main image of each, through a batch with an images
zip. It then checks what it promises: every opaque product pixel of each scene equals the placed cutout's.
With the tiny test model the scenes around the products are noise."""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageChops

from core.imaging.placement import Anchor, Placement, place_cutout
from zfarm.client import Batch, BatchCreated, Client
from zfarm.launcher.demo_cutouts import write_cutouts

SIZE = 512
FIT = 0.7
TEMPLATE = "product photo of a {product} on {setting}, natural light, shallow depth of field"
ROWS = [
    {"sku": "BTL-100", "product": "green glass bottle", "setting": "a beach at sunset", "image": "bottle.png",
     "placement_anchor": "bottom"},
    {"sku": "MUG-100", "product": "blue coffee mug", "setting": "a rustic kitchen table", "image": "mug.png",
     "placement_anchor": "bottom"},
    {"sku": "BOX-100", "product": "cardboard shipping box", "setting": "a warehouse shelf", "image": "box.png",
     "placement_anchor": "center"},
]  # fmt: skip
MAIN = {"name": "main", "background": "white", "fill": 0.85, "width": 2000, "height": 2000, "format": "jpeg"}


def submit_photo_batch(client: Client, out: Path, seed: int) -> BatchCreated:
    cutouts = out / "cutouts"
    paths = write_cutouts(cutouts)
    with zipfile.ZipFile(out / "cutouts.zip", "w") as zf:
        for path in paths:
            zf.write(path, path.name)
    catalog = out / "photos.csv"
    with catalog.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ROWS[0]))
        writer.writeheader()
        writer.writerows(ROWS)
    return client.upload_batch(
        catalog,
        images=out / "cutouts.zip",
        template=TEMPLATE,
        mode="place",
        placement={"fit": FIT},
        defaults={"width": SIZE, "height": SIZE},
        renditions=[MAIN],
        seed=seed,
        name="demo photos",
    )


def check_kept(out: Path) -> list[str]:
    """One line per SKU: the product's pixels in the scene against the placed cutout, and the main image."""
    lines = []
    for row in ROWS:
        cutout = Image.open(out / "cutouts" / row["image"])
        anchor: Anchor = "bottom" if row["placement_anchor"] == "bottom" else "center"
        layer = place_cutout(cutout, (SIZE, SIZE), Placement(fit=FIT, anchor=anchor)).layer
        opaque = layer.getchannel("A").point(lambda v: 255 if v == 255 else 0)
        scene = Image.open(out / f"{row['sku']}.png").convert("RGB")
        differs = ImageChops.difference(scene, layer.convert("RGB")).convert("L").point(lambda v: 255 if v else 0)
        kept = ImageChops.multiply(differs, opaque).getbbox() is None  # no opaque pixel differs
        main = Image.open(out / "main" / f"{row['sku']}.jpg").convert("L")
        box = main.point(lambda v: 255 if v < 250 else 0).getbbox() or (0, 0, 0, 0)
        share = max(box[2] - box[0], box[3] - box[1]) / main.width
        verdict = "kept exactly" if kept else "NOT KEPT"
        lines.append(
            f"{row['sku']}: {opaque.histogram()[255]} opaque product pixels {verdict} in the scene; "
            f"main/{row['sku']}.jpg on white, product {share:.1%} of the frame (asked {MAIN['fill']:.0%}; its "
            "soft edge fades into the white)"
        )
    return lines


def run_photo_demo(client: Client, out: Path, seed: int, follow: Callable[[Client, BatchCreated], Batch]) -> Batch:
    out.mkdir(parents=True, exist_ok=True)
    created = submit_photo_batch(client, out, seed)
    final = follow(client, created)
    client.download_batch(created["id"], out)
    return final
