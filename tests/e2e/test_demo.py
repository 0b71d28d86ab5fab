"""`make demo` runs `zfarm demo`: the built-in catalog becomes images and a manifest, then the farm stops."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.farm_helpers import REPO

pytestmark = pytest.mark.e2e


def test_demo_renders_the_catalog_and_says_it_is_noise(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFARM_")}
    env.update({"ZFARM_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"})
    done = subprocess.run(
        [sys.executable, "-m", "zfarm.cli", "demo"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
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
