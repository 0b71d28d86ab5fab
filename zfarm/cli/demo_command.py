"""`make demo`: the embedded farm renders a small product catalog, writes images and a manifest, stops.

The catalog goes through the same path as a user's: one batch (`POST /v1/batches` with the CSV file),
followed until every row is final, then its archive (images named by SKU + manifest.csv) unpacked.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

import click
import httpx
from tqdm import tqdm

from core.settings import DEFAULT_MODEL, TINY_MODEL, FarmSettings
from zfarm.cli.batch_commands import summary
from zfarm.cli.demo_photos import check_kept, run_photo_demo
from zfarm.client import Batch, BatchCreated, Client
from zfarm.launcher.embedded import Farm, open_on_loopback, pick_free_ports
from zfarm.launcher.supervision import StopSignals

TEMPLATE = "studio product photo of a {material} {product} on {setting}, soft light, 85mm, high detail"
DEMO_SIZE = 512
DEMO_PARAMETERS = {"width": DEMO_SIZE, "height": DEMO_SIZE}
DEMO_SEED = 1000  # each SKU's seed derives from it: the same catalog gives the same images on every run
# A listing thumbnail beside each master, made on the worker's CPU from the same render.
DEMO_RENDITIONS = [{"name": "thumb", "width": 256, "height": 256, "format": "webp", "quality": 85}]
READY_TIMEOUT = 600.0


def real_weights_available(model: str) -> bool:
    if Path(model).is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "model_index.json"), str)
    except Exception:  # any failure to look means: not usable offline
        return False


def run_demo(settings: FarmSettings, catalog: Path | None, out: Path | None) -> int:
    # 1. Choose the model: real weights if present, else the tiny test model, said loudly.
    if settings.model == DEFAULT_MODEL and not real_weights_available(settings.model):
        settings = settings.model_copy(update={"model": TINY_MODEL, "warmup_size": DEMO_SIZE})
        banner = "NO REAL WEIGHTS FOUND: using the TINY TEST MODEL. Its images are random NOISE, not products."
        click.secho("=" * len(banner) + "\n" + banner + "\n" + "=" * len(banner), fg="yellow", bold=True)
    out = (out or settings.data_dir / "demo").resolve()
    settings = open_on_loopback(pick_free_ports(settings))
    farm = Farm(settings, log_dir=settings.data_dir.resolve() / "logs")
    stop = StopSignals()
    stop.install()
    try:
        farm.start()
        click.echo(f"embedded farm started (process logs in {farm.log_dir}):")
        for line in farm.describe():
            click.echo("  " + line)
        with Client(farm.api_url, timeout=30) as client, ExitStack() as files:
            wait_until_ready(client, farm, stop)
            path = catalog or files.enter_context(
                resources.as_file(resources.files("zfarm.launcher.data") / "demo_catalog.csv")
            )
            created = client.upload_batch(
                path,
                template=TEMPLATE,
                defaults=DEMO_PARAMETERS,
                seed=DEMO_SEED,
                name="demo",
                renditions=DEMO_RENDITIONS,
            )
            if created["jobs_reused"]:
                click.echo(
                    f"{created['jobs_reused']} row(s) reuse images rendered by an earlier run (same model, seed)"
                )
            final = follow(client, created, stop)
            client.download_batch(created["id"], out)
            # 2. Product photos: cutouts drawn here, placed in generated scenes, plus white main images.
            photos = run_photo_demo(client, out / "photos", DEMO_SEED, lambda c, b: follow(c, b, stop))
    finally:
        click.echo("stopping the farm ...")
        farm.stop(stop)
    click.echo(summary(final))
    click.echo(f"images (named by SKU), 256x256 WebP thumbnails in thumb/ and manifest.csv in {out}")
    click.echo(summary(photos))
    for line in check_kept(out / "photos"):
        click.echo("  " + line)
    click.echo(
        f"product photos: cutouts (drawn here) in {out / 'photos' / 'cutouts'}, scenes (mode place, named by SKU), "
        f"2000x2000 white-background main images in main/ and the inputs in _inputs/, in {out / 'photos'}"
    )
    if settings.model == TINY_MODEL:
        click.secho(
            "Reminder: these images come from the tiny random test model and are noise; in the product photos "
            "only the scenes around the products are noise (the products are the cutouts' own pixels).",
            fg="yellow",
        )
    return 0 if final["status"] == photos["status"] == "succeeded" else 1


def wait_until_ready(client: Client, farm: Farm, stop: StopSignals) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    with tqdm(desc="starting workers (load + warmup)", bar_format="{desc}: {elapsed} {postfix}") as bar:
        while not stop.requested:
            if any(c.proc.poll() is not None for c in farm.children):
                raise click.ClickException("a farm process exited during start-up; see the log above")
            try:
                states = [w["state"] for w in client.workers()]
            except httpx.TransportError:
                states = []
            bar.set_postfix_str(", ".join(states) or "api starting")
            if states and "ready" in states:
                return
            if time.monotonic() > deadline:
                raise click.ClickException(f"no worker became ready within {READY_TIMEOUT:.0f}s")
            time.sleep(0.3)
            bar.refresh()
    raise click.ClickException("interrupted")


def follow(client: Client, created: BatchCreated, stop: StopSignals) -> Batch:
    with tqdm(total=created["rows"], desc="rendering catalog", unit="img") as bar:
        while True:
            batch = client.get_batch(created["id"])
            bar.update(batch["done"] - bar.n)
            if batch["status"] != "active" or stop.requested:
                return batch
            time.sleep(0.3)
