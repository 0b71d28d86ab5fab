"""`zfarm up`: Redis, database, API, one worker per GPU (else one CPU worker) and Flower in one process tree."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
from sqlalchemy import Engine, and_, or_, select

from core import data_layout
from core.settings import FarmSettings
from migrations.runner import upgrade
from worker.start_failure import START_FAILED_EXIT
from zfarm.launcher.gpus import visible_gpus
from zfarm.launcher.redis_server import free_port, spawn_redis, start_embedded_redis
from zfarm.launcher.supervision import Child, StopSignals, describe_exit, stop_children


@dataclass
class Farm:
    settings: FarmSettings
    children: list[Child] = field(default_factory=list)
    redis_url: str = ""
    flower_password: str = ""
    api_url: str = ""
    webhook_secret: str = ""
    log_dir: Path | None = None  # children's output goes to files here instead of the terminal
    # Workers whose ready line was printed since their (re)start. A worker row older than its child's
    # started_at (an earlier run in the same data dir, or before a restart) says nothing about this one.
    announced: set[str] = field(default_factory=set)

    # 1. Start everything, in dependency order.
    def start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        if data_layout.move_old_model_cache(s.data_dir.resolve()):
            click.echo(f"zfarm: moved the model cache to {s.models_dir} (its old name shadowed a package)", err=True)
        _require_free_port(s.api_host, s.api_port, "ZFARM_API_PORT")
        _require_free_port("127.0.0.1", s.flower_port, "ZFARM_FLOWER_PORT")
        if s.redis_url:
            self.redis_url = s.redis_url
        else:
            directory = s.data_dir.resolve() / data_layout.REDIS_DIR
            proc, self.redis_url = start_embedded_redis(directory)
            port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
            # Restarted on the same port and files: the children keep their URL and reconnect.
            self.children.append(Child("redis", proc, lambda: spawn_redis(directory, port)))
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
                # `python -m` would put the working directory first on the import path: started from a folder
                # holding a `models/` or `worker/` (a data dir did), a child imported that instead of the farm.
                "PYTHONSAFEPATH": "1",
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
        def launch() -> subprocess.Popen[bytes]:
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
            return proc

        self.children.append(Child(name, launch(), launch))

    def describe(self) -> list[str]:
        s = self.settings
        workers = [c.name for c in self.children if c.is_worker]
        embedded = any(c.name == "redis" for c in self.children)
        redis_dir = s.data_dir.resolve() / data_layout.REDIS_DIR
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

    # 2. Watch: a child that dies is restarted after a back-off, within a budget; past it the farm stops (a
    # half farm is worse than none). A worker that could not start (exit 3, its row says why) is not restarted.
    def wait(self, signals: StopSignals) -> int:
        from models import make_engine

        next_look = 0.0
        engine = make_engine(self.settings.resolved_database_url)  # read until every worker is announced
        try:
            while not signals.requested:
                for child in self.children:
                    if child.restart_at is not None and time.monotonic() >= child.restart_at:
                        child.restart()
                        self.announced.discard(child.name)
                    if not child.running or (code := child.proc.poll()) is None:
                        continue
                    if (verdict := self.on_exit(engine, child, code)) is not None:
                        return verdict
                if time.monotonic() >= next_look and len(self.announced) < self.worker_count:
                    next_look = time.monotonic() + 1.0
                    for line in self.newly_started(engine):
                        click.echo(line)
                time.sleep(0.2)
            return 0
        finally:
            engine.dispose()

    def on_exit(self, engine: Engine, child: Child, code: int) -> int | None:
        """Says on screen what died and what happens now; the farm's exit code when it must stop, else None."""
        child.kill_leftovers()
        if child.is_worker and code == START_FAILED_EXIT:
            child.given_up = True
            why = self.worker_failure(engine, child) or "could not start (exit code 3)"
            if any(c.is_worker and not c.given_up for c in self.children):
                click.echo(f"zfarm: worker {child.name} {why}; not restarted, the other workers go on", err=True)
                return None
            click.echo(f"zfarm: worker {child.name} {why}; stopping the farm (no worker left)", err=True)
            return 1
        delay = child.budget.take(time.monotonic())
        if delay is None and not child.essential:
            child.given_up = True
            click.echo(
                f"zfarm: {child.name} {describe_exit(code)}; it was restarted {child.budget.limit} times in "
                f"{child.budget.window / 60:.0f} min: giving up on it, the farm goes on without it",
                err=True,
            )
            return None
        if delay is None:
            click.echo(
                f"zfarm: {child.name} {describe_exit(code)}; it was restarted {child.budget.limit} times in "
                f"{child.budget.window / 60:.0f} min: giving up, stopping the farm",
                err=True,
            )
            return 1
        click.echo(
            f"zfarm: {child.name} {describe_exit(code)}; restarting it in {delay:g} s "
            f"(restart {child.budget.used} of at most {child.budget.limit} in {child.budget.window / 60:.0f} min)",
            err=True,
        )
        child.restart_at = time.monotonic() + delay
        return None

    @property
    def worker_count(self) -> int:
        return sum(1 for c in self.children if c.is_worker)

    def newly_started(self, engine: Engine) -> list[str]:
        """A line per worker that became ready since its (re)start: what it chose, how long it took. One that
        failed is marked announced without a line: its exit (code 3) says why."""
        from models import Worker

        pending = [c for c in self.children if c.is_worker and c.running and c.name not in self.announced]
        if not pending:
            return []
        query = select(
            Worker.name,
            Worker.state,
            Worker.device,
            Worker.gpu_name,
            Worker.memory_policy,
            Worker.load_seconds,
            Worker.warmup_seconds,
        ).where(
            or_(*(and_(Worker.name == c.name, Worker.started_at >= c.started_at) for c in pending)),
            Worker.state.in_(("ready", "busy", "failed")),
        )
        try:
            with engine.connect() as conn:
                rows = conn.execute(query).all()
        except Exception:  # the database may be busy at start: look again at the next round
            return []
        lines = []
        for name, state, device, gpu, policy, load, warm in rows:
            self.announced.add(name)
            if state != "failed":
                lines.append(
                    f"worker {name} ready on {gpu or device}: memory policy {policy}, "
                    f"load {load or 0:.1f} s, warmup {warm or 0:.1f} s"
                )
        return lines

    def worker_failure(self, engine: Engine, child: Child) -> str | None:
        """Why a worker that exited could not start, from its row (None when the row says nothing)."""
        from models import Worker

        try:
            with engine.connect() as conn:
                error = conn.scalar(
                    select(Worker.error).where(
                        Worker.name == child.name, Worker.state == "failed", Worker.started_at >= child.started_at
                    )
                )
        except Exception:
            return None
        return f"failed: {error}" if error else None

    # 3. Stop: warm first (running jobs finish), cold on a second signal; Redis last (supervision.py).
    def stop(self, signals: StopSignals | None = None) -> None:
        stop_children(self.children, signals or StopSignals(), self.settings.stop_timeout_seconds)
        self.children.clear()


WEBHOOK_SECRET_FILE = data_layout.WEBHOOK_SECRET_FILE


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


def data_path(settings: FarmSettings, *parts: str) -> Path:
    return settings.data_dir.resolve().joinpath(*parts)


def open_on_loopback(settings: FarmSettings) -> FarmSettings:
    """The embedded farm runs without API keys unless ZFARM_AUTH is set, and only on a loopback address."""
    if "ZFARM_AUTH" not in os.environ and settings.api_is_loopback:
        return settings.model_copy(update={"auth": False})
    return settings
