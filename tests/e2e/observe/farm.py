"""The observed farm: a real worker, the webhook sender, Flower, and the API served twice over HTTP on one
database (open, and with API keys)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.keys import create_key
from core.settings import FarmSettings
from migrations.runner import upgrade
from models import make_engine, make_session_factory
from tests.farm_helpers import REPO, start_worker, stop_process_group, wait_for, worker_env, worker_state
from tests.http_servers import serve
from zfarm.launcher.embedded import flower_command
from zfarm.launcher.redis_server import free_port

WORKER_NAME = "cpu0@zfarm-e2e"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
LOOPBACK = "127.0.0.0/8"  # the receivers in these tests listen on loopback, refused unless listed
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


@contextlib.contextmanager
def observed_farm(data: Path) -> Iterator[ObservedFarm]:
    db = f"sqlite:///{data / 'zfarm.db'}"
    upgrade(db)
    sessions = make_session_factory(make_engine(db))
    api_port = free_port()
    url = f"http://127.0.0.1:{api_port}"
    settings = FarmSettings(
        data_dir=data,
        model="tiny",  # what its worker runs: the API checks LoRA uploads against this model's modules
        database_url=db,
        api_port=api_port,
        auth=False,
        webhook_secret=WEBHOOK_SECRET,
        webhook_allow_networks=LOOPBACK,
        worker_offline_after_seconds=10,
        flower_port=free_port(),
        flower_user=FLOWER_AUTH[0],
    )
    # A render queue of its own, as every test farm has: farms alive at once never take each other's jobs.
    queue = f"{os.environ['ZFARM_QUEUE']}-observed-{uuid.uuid4().hex[:6]}"
    hooks = {
        "ZFARM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ZFARM_PUBLIC_URL": url,
        "ZFARM_WEBHOOK_BACKOFF_SECONDS": "0.2",
        "ZFARM_WEBHOOK_ALLOW_NETWORKS": LOOPBACK,
    }
    env = worker_env(db, data, WORKER_NAME, ZFARM_QUEUE=queue, **hooks)
    procs = [
        start_worker(db, data, WORKER_NAME, data / "worker.log", ZFARM_QUEUE=queue),
        _spawn([sys.executable, "-m", "zfarm.cli", "webhooks", "--concurrency", "4"], env, data / "webhooks.log"),
        _spawn(flower_command(settings, FLOWER_AUTH[1]), env, data / "flower.log"),
    ]
    try:
        wait_for(lambda: worker_state(sessions, WORKER_NAME) == "ready" or procs[0].poll() is not None, 240, "worker")
        for proc, log in zip(procs, ("worker", "webhooks", "flower"), strict=True):
            assert proc.poll() is None, f"{log} exited:\n{(data / f'{log}.log').read_text()[-3000:]}"
        keyed = settings.model_copy(update={"auth": True, "api_port": free_port()})
        with (
            serve(create_app(settings, reconcile_every=1.0, queue=queue), api_port) as open_url,
            serve(create_app(keyed, reconcile_every=1.0, queue=queue), keyed.api_port) as keyed_url,
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
