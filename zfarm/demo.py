"""`make demo`: the embedded farm renders a small product catalog, writes images and a manifest, stops."""

from __future__ import annotations

import csv
import time
from importlib import resources
from pathlib import Path

import click
import httpx
from tqdm import tqdm

from zfarm.client import FINAL, Client
from zfarm.embedded import Farm, install_signal_handlers, open_on_loopback, pick_free_ports
from zfarm.settings import DEFAULT_MODEL, TINY_MODEL, FarmSettings

TEMPLATE = "studio product photo of a {material} {product} on {setting}, soft light, 85mm, high detail"
DEMO_SIZE = 512
READY_TIMEOUT = 600.0


def real_weights_available(model: str) -> bool:
    if Path(model).is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "model_index.json"), str)
    except Exception:  # any failure to look means: not usable offline
        return False


def load_catalog(path: Path | None) -> list[dict[str, str]]:
    if path is None:
        text = resources.files("zfarm.data").joinpath("demo_catalog.csv").read_text(encoding="utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def run_demo(settings: FarmSettings, catalog: Path | None, out: Path | None) -> int:
    # 1. Choose the model: real weights if present, else the tiny test model, said loudly.
    if settings.model == DEFAULT_MODEL and not real_weights_available(settings.model):
        settings = settings.model_copy(update={"model": TINY_MODEL, "warmup_size": DEMO_SIZE})
        banner = "NO REAL WEIGHTS FOUND: using the TINY TEST MODEL. Its images are random NOISE, not products."
        click.secho("=" * len(banner) + "\n" + banner + "\n" + "=" * len(banner), fg="yellow", bold=True)
    rows = load_catalog(catalog)
    out = (out or settings.data_dir / "demo").resolve()
    settings = open_on_loopback(pick_free_ports(settings))
    farm = Farm(settings, log_dir=settings.data_dir.resolve() / "logs")
    stop = [False]
    install_signal_handlers(stop)
    try:
        farm.start()
        click.echo(f"embedded farm started (process logs in {farm.log_dir}):")
        for line in farm.describe():
            click.echo("  " + line)
        with Client(farm.api_url, timeout=30) as client:
            wait_until_ready(client, farm, stop)
            jobs = submit_catalog(client, rows)
            finished = follow(client, jobs, stop)
            write_outputs(client, rows, finished, out)
    finally:
        click.echo("stopping the farm ...")
        farm.stop()
    ok = sum(1 for j in finished.values() if j["status"] == "succeeded")
    click.echo(f"{ok}/{len(rows)} images succeeded; images and manifest.csv in {out}")
    if settings.model == TINY_MODEL:
        click.secho("Reminder: these images come from the tiny random test model and are noise.", fg="yellow")
    return 0 if ok == len(rows) else 1


def wait_until_ready(client: Client, farm: Farm, stop: list[bool]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    with tqdm(desc="starting workers (load + warmup)", bar_format="{desc}: {elapsed} {postfix}") as bar:
        while not stop[0]:
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


def submit_catalog(client: Client, rows: list[dict[str, str]]) -> dict[str, str]:
    jobs = {}
    for i, row in enumerate(rows):
        prompt = TEMPLATE.format(**row)
        job = client.submit(prompt, width=DEMO_SIZE, height=DEMO_SIZE, seed=1000 + i)
        jobs[row["sku"]] = job["id"]
    return jobs


def follow(client: Client, jobs: dict[str, str], stop: list[bool]) -> dict[str, dict]:
    finished: dict[str, dict] = {}
    with tqdm(total=len(jobs), desc="rendering catalog", unit="img") as bar:
        while len(finished) < len(jobs) and not stop[0]:
            for sku, job_id in jobs.items():
                if sku in finished:
                    continue
                job = client.get(job_id)
                if job["status"] in FINAL:
                    finished[sku] = job
                    bar.update(1)
            time.sleep(0.3)
    return finished


def write_outputs(client: Client, rows: list[dict[str, str]], finished: dict[str, dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "sku",
                "status",
                "file",
                "prompt",
                "seed",
                "width",
                "height",
                "format",
                "sha256",
                "gpu_seconds",
                "worker",
                "model",
                "test_model_noise",
                "job_id",
                "error",
            ]
        )
        for row in rows:
            job = finished.get(row["sku"])
            if job is None:
                writer.writerow([row["sku"], "not finished"] + [""] * 13)
                continue
            image = job["images"][0] if job["images"] else None
            file_name = ""
            if image is not None:
                file_name = f"{row['sku']}.{'jpg' if image['format'] == 'jpeg' else image['format']}"
                (out / file_name).write_bytes(client.image_bytes(job["id"], 0))
            writer.writerow(
                [
                    row["sku"],
                    job["status"],
                    file_name,
                    job["parameters"]["prompt"],
                    image["seed"] if image else "",
                    job["parameters"]["width"],
                    job["parameters"]["height"],
                    image["format"] if image else "",
                    image["sha256"] if image else "",
                    f"{job['gpu_seconds']:.3f}" if job["gpu_seconds"] else "",
                    job["worker_name"],
                    job["model_id"],
                    job["test_model_noise"],
                    job["id"],
                    job["error"] or "",
                ]
            )
