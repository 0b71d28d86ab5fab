"""The GPU benchmark's one command runs on a CPU with the tiny model: a smoke run, no timing asserted.

A real farm as `zfarm up` starts it (embedded Redis, SQLite, API, a Celery worker, Flower), jobs over HTTP,
batching and the finishing threads on: every job ends succeeded, once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.farm_helpers import REPO

pytestmark = pytest.mark.e2e


def test_benchmark_runs_end_to_end_on_the_tiny_model(tmp_path: Path) -> None:
    # given: a clean environment (the benchmark starts its own Redis, like `zfarm up`)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFARM_")}
    out, md = tmp_path / "result.json", tmp_path / "BENCHMARKS.md"
    cmd = [sys.executable, "-m", "bench.gpu_throughput", "--tiny", "--workdir", str(tmp_path / "work")]
    cmd += [
        "--jobs",
        "4",
        "--sizes",
        "256x256",
        "--steps",
        "2",
        "--idle-jobs",
        "1",
        "--renditions",
        "thumb=128x128:webp",
        "--loras",
        "4",
    ]
    cmd += ["--env", "ZFARM_BATCH_MAX_IMAGES=4"]  # batching is opt-in: exercise it through Celery here
    cmd += ["--out", str(out), "--benchmarks-md", str(md)]
    # when
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    # then
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    phase, with_thumbs = result["phases"]
    assert phase["succeeded"] == phase["jobs"] == phase["images"] == 4
    assert with_thumbs["size"] == "256x256 + 128x128 webp" and with_thumbs["succeeded"] == 4
    assert with_thumbs["renditions_made"] == 4 and "renditions_made" not in phase
    assert phase["img_per_s"] > 0 and phase["latency_p95_s"] >= phase["latency_p50_s"] > 0
    assert result["idle"]["succeeded"] == 1
    assert result["cold_start"]["policy"] == "full" and result["cold_start"]["cold_start_s"] > 0
    assert result["worker_stats"]["jobs_at_end"] == 9 + 12 and result["worker_stats"]["compiled"] is False
    # the LoRA phases: rank-64 random adapters through the API, every job styled as asked; batching is on here, so
    # alternating jobs of one adapter may share a call: at least the first switch to each adapter is counted
    lora = result["adapters"]
    assert "error" not in lora, lora
    for key in ("plain", "one_adapter", "switching"):
        assert lora[key]["succeeded"] == lora[key]["jobs"] == 4
    assert lora["rank"] == 64 and lora["switches"] >= 2 and len(lora["first_switches_s"]) == 2
    assert lora["graphs_before"] == lora["graphs_after"] == 0  # compile is off on a CPU: the GPU run measures it
    table = md.read_text()
    assert "tiny random test model" in table and "farm 256x256 x2 steps" in table
    assert "LoRA rank 64, one adapter" in table and "LoRA switch time p50" in table
    assert "python -m bench.gpu_throughput --tiny" in table
