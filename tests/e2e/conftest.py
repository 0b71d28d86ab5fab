"""One observed farm for the observability tests: a real worker, the webhook sender, Flower, and the API
served twice over HTTP on one database (open, and with API keys), plus a headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.keys import create_key
from migrations.runner import upgrade
from models import make_engine, make_session_factory
from tests.e2e.servers import serve
from tests.farm_helpers import REPO, start_worker, stop_process_group, wait_for, worker_env, worker_state
from zfarm.embedded import flower_command
from zfarm.redis_server import free_port
from zfarm.settings import FarmSettings

WORKER_NAME = "cpu0@zfarm-e2e"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
FLOWER_AUTH = ("zfarm", "flower-test-password")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class ObservedFarm:
    url: str  # the API, open (no keys), as `zfarm up` runs it
    keyed_url: str  # the same farm with API keys required
    admin_key: str
    worker_name: str
    flower_url: str
    sessions: sessionmaker[Session]
    data_dir: Path


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="session")
def observed_farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedFarm]:
    data = tmp_path_factory.mktemp("observed")
    db = f"sqlite:///{data / 'zfarm.db'}"
    upgrade(db)
    sessions = make_session_factory(make_engine(db))
    api_port = free_port()
    url = f"http://127.0.0.1:{api_port}"
    settings = FarmSettings(
        data_dir=data,
        database_url=db,
        api_port=api_port,
        auth=False,
        webhook_secret=WEBHOOK_SECRET,
        worker_offline_after_seconds=10,
        flower_port=free_port(),
        flower_user=FLOWER_AUTH[0],
    )
    hooks = {"ZFARM_WEBHOOK_SECRET": WEBHOOK_SECRET, "ZFARM_PUBLIC_URL": url, "ZFARM_WEBHOOK_BACKOFF_SECONDS": "0.2"}
    env = worker_env(db, data, WORKER_NAME, **hooks)
    procs = [
        start_worker(db, data, WORKER_NAME, data / "worker.log"),
        _spawn([sys.executable, "-m", "zfarm.cli", "webhooks", "--concurrency", "4"], env, data / "webhooks.log"),
        _spawn(flower_command(settings, FLOWER_AUTH[1]), env, data / "flower.log"),
    ]
    try:
        wait_for(lambda: worker_state(sessions, WORKER_NAME) == "ready" or procs[0].poll() is not None, 120, "worker")
        for proc, log in zip(procs, ("worker", "webhooks", "flower"), strict=True):
            assert proc.poll() is None, f"{log} exited:\n{(data / f'{log}.log').read_text()[-3000:]}"
        keyed = settings.model_copy(update={"auth": True, "api_port": free_port()})
        with (
            serve(create_app(settings, reconcile_every=1.0), api_port) as open_url,
            serve(create_app(keyed, reconcile_every=1.0), keyed.api_port) as keyed_url,
            sessions() as s,
        ):
            _, admin_key = create_key(s, tenant="ops", name="e2e admin", is_admin=True)
            yield ObservedFarm(
                url=open_url,
                keyed_url=keyed_url,
                admin_key=admin_key,
                worker_name=WORKER_NAME,
                flower_url=f"http://127.0.0.1:{settings.flower_port}",
                sessions=sessions,
                data_dir=data,
            )
    finally:
        for proc in procs:
            stop_process_group(proc)


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium here: `make test` installs Debian's chromium where apt-get exists; it could not")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def screenshots_dir() -> Path | None:
    """Set ZFARM_SCREENSHOTS=docs/screenshots to keep pictures of the views (make screenshots)."""
    target = os.environ.get("ZFARM_SCREENSHOTS")
    if not target:
        return None
    path = Path(target).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
