"""A command that cannot reach its API or database says which URL and why in one line, and exits 2 (issue 16, bug 4)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zfarm.launcher.redis_server import free_port


def _zfarm(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ZFARM_")}
    return subprocess.run(
        [sys.executable, "-m", "zfarm.cli", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_keys_create_outside_a_data_directory(tmp_path: Path) -> None:
    line = _one_line(_zfarm(tmp_path, "keys", "create", "--tenant", "shop"))
    database = f"sqlite:///{tmp_path / 'data' / 'zfarm.db'}"
    assert line.startswith(f"zfarm: cannot use the database at {database}: unable to open database file"), line
    assert "ZFARM_DATA_DIR" in line


def test_keys_list_on_a_database_without_tables_says_to_migrate(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "zfarm.db").touch()
    line = _one_line(_zfarm(tmp_path, "keys", "list"))
    assert "no such table: api_keys" in line and "zfarm migrate" in line, line


def test_a_postgresql_url_that_does_not_answer_is_named_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://zfarm:hunter2@127.0.0.1:{free_port()}/zfarm"
    line = _one_line(_zfarm(tmp_path, "keys", "list", ZFARM_DATABASE_URL=url))
    assert f"postgresql+psycopg://***@127.0.0.1:{url.rsplit(':', 1)[1]}" in line and "hunter2" not in line, line
    assert "Connection refused" in line or "connection failed" in line, line


@pytest.mark.parametrize(
    "args",
    [("status", "0123abcd"), ("submit", "a mug"), ("workers",), ("fetch", "0123abcd", "-o", "out")],
    ids=lambda a: a[0],
)
def test_client_commands_name_the_api_url_they_could_not_reach(tmp_path: Path, args: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = _one_line(_zfarm(tmp_path, *args, ZFARM_URL=url))
    assert line.startswith(f"zfarm: cannot reach the API at {url}/v1/"), line
    assert "Connection refused" in line and "zfarm up" in line, line


def test_a_url_without_a_scheme_is_named_with_what_it_lacks(tmp_path: Path) -> None:
    line = _one_line(_zfarm(tmp_path, "status", "0123abcd", "--url", "localhost:8000"))
    assert "cannot reach the API at localhost:8000" in line and "http:// or https://" in line, line
