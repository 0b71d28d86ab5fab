"""`zfarm up`: Redis, database, API, one worker per GPU (else one CPU worker) and Flower in one process tree."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click
from sqlalchemy import Engine, select

from core.settings import FarmSettings
from migrations.runner import upgrade
from zfarm.launcher.gpus import visible_gpus
from zfarm.launcher.redis_server import free_port, start_embedded_redis

STOP_GRACE_SECONDS = 20.0


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


@dataclass
class Farm:
    settings: FarmSettings
    children: list[Child] = field(default_factory=list)
    redis_url: str = ""
    flower_password: str = ""
    api_url: str = ""
    webhook_secret: str = ""
    log_dir: Path | None = None  # children's output goes to files here instead of the terminal
    # Worker rows written before this (an earlier run in the same data directory) say nothing about this run.
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    # 1. Start everything, in dependency order.
    def start(self) -> None:
        s = self.settings
        self.started_at = datetime.now(UTC)
        s.data_dir.mkdir(parents=True, exist_ok=True)
        _require_free_port(s.api_host, s.api_port, "ZFARM_API_PORT")
        _require_free_port("127.0.0.1", s.flower_port, "ZFARM_FLOWER_PORT")
        if s.redis_url:
            self.redis_url = s.redis_url
        else:
            proc, self.redis_url = start_embedded_redis(s.data_dir.resolve() / "redis")
            self.children.append(Child("redis", proc))
        upgrade(s.resolved_database_url)
        self.webhook_secret = s.webhook_secret or webhook_secret_file(s.data_dir.resolve())
        env = self.child_env()
        self.api_url = f"http://{s.api_host}:{s.api_port}"
        self._spawn("api", [sys.executable, "-m", "zfarm.cli", "api"], env)
        for name, worker_env in self.worker_envs(env):
            self._spawn(name, [sys.executable, "-m", "zfarm.cli", "worker", "--name", name], worker_env)
        self.flower_password = s.flower_password or secrets.token_urlsafe(12)
        self._spawn("flower", flower_command(s, self.flower_password), env)
        self._spawn("webhooks", [sys.executable, "-m", "zfarm.cli", "webhooks"], env)

    def child_env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update(
            {
                "ZFARM_REDIS_URL": self.redis_url,
                "ZFARM_DATABASE_URL": s.resolved_database_url,
                "ZFARM_DATA_DIR": str(s.data_dir.resolve()),
                "ZFARM_API_HOST": s.api_host,
                "ZFARM_API_PORT": str(s.api_port),
                "ZFARM_FLOWER_PORT": str(s.flower_port),
                "ZFARM_MODEL": s.model,
                "ZFARM_MEMORY_POLICY": s.memory_policy,
                "ZFARM_AUTH": "true" if s.auth else "false",
                "ZFARM_WEBHOOK_SECRET": self.webhook_secret,
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def worker_envs(self, env: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
        host = socket.gethostname()
        gpus = [] if self.settings.device == "cpu" else visible_gpus()
        if not gpus:
            return [(f"cpu0@{host}", {**env, "ZFARM_DEVICE": "cpu", "ZFARM_WORKER_NAME": f"cpu0@{host}"})]
        out = []
        for gpu in gpus:
            name = f"gpu{gpu.index}@{host}"
            # One process per card, pinned before CUDA starts in that process.
            out.append((name, {**env, "CUDA_VISIBLE_DEVICES": gpu.index, "ZFARM_WORKER_NAME": name}))
        return out

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        # Own session per child: Ctrl-C reaches only this supervisor, which stops children in order.
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = (self.log_dir / f"{name.split('@')[0]}.log").open("ab")
        proc = subprocess.Popen(
            cmd, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT if out else None
        )
        if out is not None:
            out.close()  # the child holds its own descriptor
        self.children.append(Child(name, proc))

    def describe(self) -> list[str]:
        s = self.settings
        workers = [c.name for c in self.children if "@" in c.name]
        embedded = any(c.name == "redis" for c in self.children)
        redis_dir = s.data_dir.resolve() / "redis"
        return [
            f"api      {self.api_url}  (docs {self.api_url}/docs)"
            + ("" if s.auth else "  OPEN: no API keys, loopback only"),
            f"flower   http://127.0.0.1:{s.flower_port}  (user {s.flower_user}, password {self.flower_password})",
            f"redis    {_mask(self.redis_url)}" + (f"  (embedded, append-only in {redis_dir})" if embedded else ""),
            f"database {_mask(s.resolved_database_url)}",
            f"data     {s.data_dir.resolve()}  (images in {s.storage_url or s.storage_dir})",
            f"model    {s.model}{'  (TINY TEST MODEL: random weights, images are noise)' if s.is_tiny_model else ''}",
            f"workers  {', '.join(workers)}  (memory policy {s.memory_policy}"
            + ("; each card's choice is printed when it is ready)" if s.memory_policy == "auto" else ")"),
            "webhooks signed with HMAC-SHA256, secret from "
            + ("ZFARM_WEBHOOK_SECRET" if s.webhook_secret else str(s.data_dir.resolve() / WEBHOOK_SECRET_FILE)),
            f"web page {self.api_url}/   metrics {self.api_url}/metrics",
        ]

    # 2. Watch: a child that exits on its own stops the farm (a half farm is worse than none).
    def wait(self, stop_flag: list[bool]) -> int:
        from models import make_engine

        announced: set[str] = set()
        next_look = 0.0
        engine = make_engine(self.settings.resolved_database_url)  # read until every worker is announced
        try:
            while not stop_flag[0]:
                for child in self.children:
                    code = child.proc.poll()
                    if code is not None:
                        why = self.worker_failure(engine, child.name) or f"exited with code {code}"
                        click.echo(f"zfarm: {child.name} {why}; stopping the farm", err=True)
                        return 1
                if time.monotonic() >= next_look and len(announced) < self.worker_count:
                    next_look = time.monotonic() + 1.0
                    for name, line, failed in self.newly_started(engine, announced):
                        if failed:  # it cannot render: the farm stops rather than queue jobs nobody runs
                            click.echo(f"zfarm: worker {name} {line}; stopping the farm", err=True)
                            return 1
                        click.echo(line)
                time.sleep(0.2)
            return 0
        finally:
            engine.dispose()

    @property
    def worker_count(self) -> int:
        return sum(1 for c in self.children if "@" in c.name)

    def newly_started(self, engine: Engine, announced: set[str]) -> list[tuple[str, str, bool]]:
        """(name, line, failed) per worker that finished starting since the last look: ready (what it chose,
        how long) or failed (why)."""
        from models import Worker

        names = [c.name for c in self.children if "@" in c.name and c.name not in announced]
        query = select(
            Worker.name,
            Worker.state,
            Worker.error,
            Worker.device,
            Worker.gpu_name,
            Worker.memory_policy,
            Worker.load_seconds,
            Worker.warmup_seconds,
        ).where(
            Worker.name.in_(names),
            Worker.state.in_(("ready", "busy", "failed")),
            Worker.started_at >= self.started_at,
        )
        try:
            with engine.connect() as conn:
                rows = conn.execute(query).all()
        except Exception:  # the database may be busy at start: look again at the next round
            return []
        lines = []
        for name, state, error, device, gpu, policy, load, warm in rows:
            announced.add(name)
            if state == "failed":
                lines.append((name, f"failed: {error}", True))
                continue
            lines.append(
                (
                    name,
                    f"worker {name} ready on {gpu or device}: memory policy {policy}, "
                    f"load {load or 0:.1f} s, warmup {warm or 0:.1f} s",
                    False,
                )
            )
        return lines

    def worker_failure(self, engine: Engine, name: str) -> str | None:
        """Why a worker that exited could not start, from its row (None for other children, or no reason)."""
        from models import Worker

        if "@" not in name:
            return None
        try:
            with engine.connect() as conn:
                error = conn.scalar(
                    select(Worker.error).where(
                        Worker.name == name, Worker.state == "failed", Worker.started_at >= self.started_at
                    )
                )
        except Exception:
            return None
        return f"failed: {error}" if error else None

    # 3. Stop: SIGTERM each child's process group (Celery's pool children included), then SIGKILL.
    def stop(self) -> None:
        for child in reversed(self.children):
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in reversed(self.children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(child.proc, signal.SIGKILL)
            child.proc.wait()
        self.children.clear()


WEBHOOK_SECRET_FILE = "webhook_secret"


def webhook_secret_file(data_dir: Path) -> str:
    """The embedded farm's webhook secret: made once, kept in the data dir so receivers keep working."""
    path = data_dir / WEBHOOK_SECRET_FILE
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def flower_command(s: FarmSettings, password: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "broker_config.celery_app",
        "flower",
        f"--port={s.flower_port}",
        "--address=127.0.0.1",
        f"--basic-auth={s.flower_user}:{password}",
        "--purge_offline_workers=60",
    ]


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _require_free_port(host: str, port: int, variable: str) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise click.ClickException(f"port {port} on {host} is in use; set {variable} to a free port") from None


def _mask(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def pick_free_ports(settings: FarmSettings) -> FarmSettings:
    """For the demo: keep the configured ports when free, else take free ones."""
    updates = {}
    for attr in ("api_port", "flower_port"):
        try:
            _require_free_port("127.0.0.1", getattr(settings, attr), attr)
        except click.ClickException:
            updates[attr] = free_port()
    return settings.model_copy(update=updates) if updates else settings


def install_signal_handlers(stop_flag: list[bool]) -> None:
    def _stop(_sig: int, _frame: object) -> None:
        stop_flag[0] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)


def data_path(settings: FarmSettings, *parts: str) -> Path:
    return settings.data_dir.resolve().joinpath(*parts)


def open_on_loopback(settings: FarmSettings) -> FarmSettings:
    """The embedded farm runs without API keys unless ZFARM_AUTH is set, and only on a loopback address."""
    if "ZFARM_AUTH" not in os.environ and settings.api_is_loopback:
        return settings.model_copy(update={"auth": False})
    return settings
