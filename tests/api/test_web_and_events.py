"""The web page's files, the event routes' refusals, and the webhook sender's start-up."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import FarmSettings
from migrations.runner import upgrade
from tests.farm_helpers import REPO


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    upgrade(url)
    with TestClient(create_app(FarmSettings(data_dir=tmp_path, database_url=url, auth=False))) as client:
        yield client


def test_root_serves_the_page_and_its_assets(api: TestClient) -> None:
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("/static/app.js", "/static/style.css"):
        assert f'"{asset}"' in page.text
        assert api.get(asset).status_code == 200


def test_events_of_an_unknown_job_are_404_before_any_stream(api: TestClient) -> None:
    response = api.get(f"/v1/jobs/{'f' * 32}/events")
    assert response.status_code == 404 and response.json()["detail"] == f"job {'f' * 32!r} not found"


def test_events_of_an_unknown_batch_are_404(api: TestClient) -> None:
    response = api.get("/v1/batches/abc/events")
    assert response.status_code == 404 and response.json()["detail"] == "batch 'abc' not found"


def test_webhook_sender_refuses_to_start_without_a_secret_and_never_imports_torch() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    refused = subprocess.run(
        [sys.executable, "-m", "zfarm.cli", "webhooks"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "ZFARM_WEBHOOK_SECRET" in refused.stderr
    probe = "import sys, worker.webhook_tasks; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO).returncode == 0
