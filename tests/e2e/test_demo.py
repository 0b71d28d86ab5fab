"""`make demo` runs `zfarm demo`: the built-in catalog becomes images and a manifest, then the farm stops."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.farm_helpers import REPO

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(600)  # two batches now: the catalog, and the product photos with 2000x2000 main images
def test_demo_renders_the_catalog_and_says_it_is_noise(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFARM_")}
    env.update({"ZFARM_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"})
    done = subprocess.run(
        [sys.executable, "-m", "zfarm.cli", "demo"], env=env, cwd=REPO, capture_output=True, text=True, timeout=540
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "TINY TEST MODEL" in done.stdout and "NOISE" in done.stdout
    out = tmp_path / "data" / "demo"
    lines = list(csv.DictReader((out / "manifest.csv").open(encoding="utf-8")))
    rows = [line for line in lines if line["rendition"] == ""]
    thumbs = [line for line in lines if line["rendition"] == "thumb"]
    catalog = list(csv.DictReader((REPO / "zfarm" / "launcher" / "data" / "demo_catalog.csv").open(encoding="utf-8")))
    assert len(rows) == len(thumbs) == len(catalog) >= 8 and len(lines) == 2 * len(catalog)
    # the demo went through the batch path: one manifest line per SKU image, each named by its SKU
    assert [row["key"] for row in rows] == [item["sku"] for item in catalog]
    for row in rows:
        assert row["status"] == "succeeded" and row["test_model_noise"] == "True"
        assert row["file"] == f"{row['key']}.png" and row["width"] == row["height"] == "512"
        assert hashlib.sha256((out / row["file"]).read_bytes()).hexdigest() == row["sha256"]
    # and a thumbnail per SKU, made from the same render
    for thumb in thumbs:
        assert thumb["file"] == f"thumb/{thumb['key']}.webp" and thumb["width"] == thumb["height"] == "256"
        assert hashlib.sha256((out / thumb["file"]).read_bytes()).hexdigest() == thumb["sha256"]
    assert "8 succeeded" in done.stdout
    # product photos: three cutouts drawn locally, placed in scenes with their pixels kept, and main images
    photos = tmp_path / "data" / "demo" / "photos"
    placed = [line for line in done.stdout.splitlines() if "opaque product pixels" in line]
    assert len(placed) == 3 and all("kept exactly" in line for line in placed)
    shares = [float(re.search(r"product ([\d.]+)% of the frame", line).group(1)) for line in placed]  # type: ignore[union-attr]
    assert all(83.5 <= share <= 85.0 for share in shares), shares
    assert "3 succeeded" in done.stdout and "only the scenes around the products are noise" in done.stdout
    for sku in ("BTL-100", "MUG-100", "BOX-100"):
        with Image.open(photos / f"{sku}.png") as scene, Image.open(photos / "main" / f"{sku}.jpg") as main:
            assert scene.size == (512, 512) and main.size == (2000, 2000)
            assert main.convert("RGB").getpixel((5, 5)) == (255, 255, 255)
        assert (photos / "_inputs" / f"{sku}.png").is_file()
    photo_lines = list(csv.DictReader((photos / "manifest.csv").open(encoding="utf-8")))
    assert {line["mode"] for line in photo_lines} == {"place"} and all(
        line["input_image_sha256"] for line in photo_lines
    )
