"""The commands a user reaches for, through the real `zfarm` CLI against a served API (issue 16, item 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from core.settings import FarmSettings
from migrations.runner import upgrade
from tests.farm_helpers import REPO, serve_http


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("cli")
    db = f"sqlite:///{data / 'z.db'}"
    upgrade(db)
    # a queue no worker reads: jobs stay queued while the commands look at them
    app = create_app(FarmSettings(data_dir=data, database_url=db, auth=False), queue=f"cli-{os.getpid()}")
    with serve_http(app) as served:
        yield served


def zfarm(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZFARM_URL": url}
    result = subprocess.run(
        [sys.executable, "-m", "zfarm.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_submit_with_a_preset_then_status_jobs_and_cancel_by_prefix(url: str) -> None:
    job_id = zfarm(url, "submit", "a walnut cutting board", "--preset", "thumbnail-512", "--seed", "5").stdout.strip()
    short = job_id[:8]
    # status: a summary by default, the record with --json
    summary = zfarm(url, "status", short).stdout
    assert f"job      {job_id}" in summary and "status   queued" in summary
    assert "render   512x512 webp, 8 steps, guidance 0.0, seeds 5" in summary
    assert "waiting  for a live worker: none is running" in summary
    record = json.loads(zfarm(url, "status", short, "--json").stdout)
    assert record["id"] == job_id and record["parameters"]["output_format"] == "webp"
    # jobs: recent first, filtered by status
    listed = zfarm(url, "jobs", "--status", "queued").stdout.splitlines()
    assert listed[0].startswith(f"{short}  queued") and "a walnut cutting board" in listed[0]
    assert zfarm(url, "jobs", "--status", "succeeded").stdout == ""
    # cancel by prefix
    assert zfarm(url, "cancel", short).stdout.strip() == f"job {job_id} canceled"
    assert httpx.get(f"{url}/v1/jobs/{job_id}").json()["status"] == "canceled"
    assert short in zfarm(url, "jobs", "--status", "canceled").stdout


def test_batches_status_and_cancel_of_a_batch_by_prefix(url: str, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("sku,product\nA-1,mug\nA-2,cup\n")
    batch_id = zfarm(url, "batch", str(catalog), "--template", "photo of a {product}", "--name", "mugs").stdout.strip()
    short = batch_id[:8]
    listed = zfarm(url, "batches", "--status", "active").stdout
    assert f"{short}  active" in listed and "0/2" in listed and "mugs" in listed
    summary = zfarm(url, "status", short).stdout
    assert f"batch    {batch_id}  mugs" in summary and "status   active: 0/2 done" in summary
    canceled = zfarm(url, "cancel", short).stdout
    assert canceled.startswith(f"batch {batch_id} canceled: 2 job(s) canceled")
    assert short in zfarm(url, "batches", "--status", "canceled").stdout
    assert short not in zfarm(url, "batches", "--status", "active").stdout


def test_an_ambiguous_or_unknown_id_is_refused_with_the_reason(url: str) -> None:
    env = {**os.environ, "ZFARM_URL": url}
    result = subprocess.run(
        [sys.executable, "-m", "zfarm.cli", "status", "ffffffff"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 1 and "batch 'ffffffff' not found" in result.stderr


def test_version_and_help_say_defaults_and_ranges(url: str) -> None:
    assert zfarm(url, "--version").stdout.startswith("zfarm, version ")
    helptext = zfarm(url, "submit", "--help").stdout
    assert "256..2048, a multiple of 16" in helptext and "[default: 8]" in helptext and "--preset" in helptext
    assert "[default: 20; 1<=x<=500]" in zfarm(url, "jobs", "--help").stdout
