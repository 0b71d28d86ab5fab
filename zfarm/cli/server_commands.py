"""Server commands of `zfarm` (need the `server` extra): up, api, worker, webhooks, flower, migrate, demo."""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

import click

from core import data_layout
from core.capability import takes_large, worker_max_pixels
from core.queues import worker_queue_order
from core.settings import get_settings
from worker.start_failure import START_FAILED_EXIT


@click.command()
def up() -> None:
    """Start the whole farm in one process tree; Ctrl-C stops all of it (running jobs finish first)."""
    from zfarm.launcher.embedded import Farm, open_on_loopback
    from zfarm.launcher.supervision import StopSignals

    farm = Farm(open_on_loopback(get_settings()))
    stop = StopSignals()
    stop.install()
    code = 1
    try:
        farm.start()
        click.echo("zfarm is up:")
        for line in farm.describe():
            click.echo("  " + line)
        click.echo("Ctrl-C stops everything: running jobs finish first; a second Ctrl-C stops at once.")
        code = farm.wait(stop)
    finally:
        click.echo("zfarm: stopping ...", err=True)
        farm.stop(stop)
        click.echo("zfarm: stopped", err=True)
    sys.exit(code)


@click.command()
def api() -> None:
    """Run the HTTP API (uvicorn)."""
    from api.app import create_app
    from api.serving import serve
    from core.storage import StorageUnavailable

    s = get_settings()
    if not s.auth and not s.api_is_loopback:
        raise click.ClickException(
            f"ZFARM_AUTH=false is refused on ZFARM_API_HOST={s.api_host}: an open API may only bind a loopback address"
        )
    # The loops' own lines (leader changes, reconciler rounds, dispatcher) go to stderr beside uvicorn's.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("control").setLevel(logging.INFO)
    click.echo(
        f"zfarm api on http://{s.api_host}:{s.api_port} (database {s.resolved_database_url.split('@')[-1]}, "
        f"{'API keys required' if s.auth else 'OPEN: no API keys'})"
    )
    try:
        app = create_app(s)
    except StorageUnavailable as exc:
        raise click.ClickException(f"zfarm api cannot start: {exc}") from exc
    click.echo(f"zfarm api: storage {app.state.storage.url_text}")
    serve(app, s)  # uvicorn with deadlines for slow clients


class _StartRefused(click.ClickException):
    """One line, and the exit code of a worker that cannot start: `zfarm up` reports it and stops instead of
    restarting it into the same refusal (zfarm/launcher/embedded.py)."""

    exit_code = START_FAILED_EXIT


@click.command()
@click.option("--name", default=None, help="Worker name, e.g. gpu0@host (default: ZFARM_WORKER_NAME or cpu0@host).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(name: str | None, loglevel: str) -> None:
    """Run one render worker (one per GPU card: pin it with CUDA_VISIBLE_DEVICES)."""
    s = get_settings()
    name = name or s.worker_name or f"cpu0@{socket.gethostname()}"
    data_layout.move_old_model_cache(s.data_dir.resolve())  # a data dir from before issue 17
    os.environ["ZFARM_WORKER_NAME"] = name
    # The pool child that loads the model is forked from this process: a CUDA availability check here (any
    # library may make one on import) would poison that fork ("Cannot re-initialize CUDA in forked
    # subprocess"). Asked through NVML instead, the check leaves CUDA untouched in this parent.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

    import worker.tasks  # noqa: F401  (registers the tasks and the process start-up hooks)
    from broker_config.celery_app import app
    from core.storage import StorageUnavailable
    from core.storage_setup import open_storage
    from worker import start_failure
    from worker.fp8_support import fp8_problem, smi_capability, smi_total_mib

    note = Path(tempfile.mkstemp(prefix="zfarm-worker-start-")[1])
    start_failure.failure_note = note  # the pool child, forked from here, writes why it could not start

    if s.precision == "fp8" and (problem := fp8_problem(s.device, None if s.device == "cpu" else smi_capability())):
        raise _StartRefused(f"worker {name} refuses to start: {problem}")  # never a silent bf16 fallback
    try:
        storage = open_storage(s)  # the bucket answers, exists and takes these credentials: checked before any job
    except StorageUnavailable as exc:
        raise _StartRefused(f"worker {name} cannot start: {exc}") from exc
    # What this card takes decides which queues it reads; the child records the same figure in its row.
    max_pixels = worker_max_pixels(s, None if s.device == "cpu" else smi_total_mib())
    os.environ["ZFARM_WORKER_MAX_PIXELS"] = str(max_pixels)
    get_settings.cache_clear()
    s = get_settings()
    queues = worker_queue_order(s.worker_queues[0], name, takes_large(max_pixels, s.large_pixels))
    logging.basicConfig(level=loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo(
        f"zfarm worker {name}: model {s.model}, precision {s.precision}, memory policy {s.memory_policy}, device "
        f"{s.device}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(all)')}, images up to "
        f"{max_pixels} pixels, queues {', '.join(queues)}, data {s.data_dir.resolve()}, storage {storage.url_text}"
    )
    # prefork with one child: the child loads the model; if it dies the parent requeues its job and forks anew.
    app.worker_main(
        [
            "worker",
            "--pool=prefork",
            "--concurrency=1",
            # its precision's tier, interactive first (see celeryconfig), then its own bulk queue (jobs with the LoRA
            # adapters it holds: control/affinity.py), then the tier's shared bulk queue; large queues first on a
            # card that takes them (core/queues.py)
            f"--queues={','.join(queues)}",
            f"--hostname={name}",
            "--task-events",
            "--without-gossip",
            "--without-mingle",
            f"--loglevel={loglevel}",
        ]
    )
    reason = note.read_text().strip()
    note.unlink(missing_ok=True)
    if reason:
        # Celery routed sys.stderr into its logger while it ran; the line goes to the real stderr, last.
        click.echo(f"zfarm worker {name} failed: {reason}", file=sys.__stderr__)
        sys.exit(START_FAILED_EXIT)  # `zfarm up` reports it and does not restart it


@click.command()
@click.option("--concurrency", default=8, show_default=True, help="Deliveries in flight at once (threads).")
@click.option("--loglevel", default="INFO", show_default=True)
def webhooks(concurrency: int, loglevel: str) -> None:
    """Run the webhook sender: a light worker on the webhooks queue (no GPU, never imports torch)."""
    s = get_settings()
    if not s.webhook_secret:
        raise click.ClickException("set ZFARM_WEBHOOK_SECRET (16+ characters): webhooks are always signed")

    import worker.webhook_tasks  # noqa: F401  (registers the delivery task)
    from broker_config.celery_app import app

    b = get_settings()
    logging.basicConfig(level=loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo(f"zfarm webhooks: queue {b.webhook_queue}, {concurrency} threads, up to {s.webhook_max_attempts} tries")
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            f"--queues={b.webhook_queue}",
            f"--hostname=webhooks@{socket.gethostname()}",
            "--without-gossip",
            "--without-mingle",
            f"--loglevel={loglevel}",
        ]
    )


@click.command()
def flower() -> None:
    """Run Flower (basic auth from ZFARM_FLOWER_USER / ZFARM_FLOWER_PASSWORD)."""
    from zfarm.launcher.embedded import flower_command

    s = get_settings()
    if not s.flower_password:
        raise click.ClickException("set ZFARM_FLOWER_PASSWORD: Flower never runs without authentication")
    cmd = flower_command(s, s.flower_password)
    os.execv(cmd[0], cmd)


@click.command()
def migrate() -> None:
    """Apply database migrations (alembic upgrade head)."""
    from migrations.runner import upgrade

    url = get_settings().resolved_database_url
    get_settings().data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    click.echo(f"database at head: {url.split('@')[-1]}")


@click.command()
@click.option(
    "--catalog",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV with sku and prompt columns (default: the built-in demo catalog).",
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Where images go (default DATA_DIR/demo).")
def demo(catalog: Path | None, out: Path | None) -> None:
    """Start the embedded farm, render a small product catalog, write images + manifest, stop."""
    from zfarm.cli.demo_command import run_demo

    sys.exit(run_demo(get_settings(), catalog, out))
