"""Client commands of `zfarm`: submit, status, fetch (a job or a batch), workers. They use zfarm.client (httpx) only."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from zfarm.cli.image_options import image_mode_options, mode_fields
from zfarm.client import Client, Job, ZfarmError

url_option = click.option(
    "--url", envvar="ZFARM_URL", default=None, help="API base URL (env ZFARM_URL)  [default: http://127.0.0.1:8000]"
)
key_option = click.option("--api-key", envvar="ZFARM_API_KEY", default=None, help="API key (env ZFARM_API_KEY).")


def _client(url: str | None, api_key: str | None) -> Client:
    return Client(url or f"http://127.0.0.1:{os.environ.get('ZFARM_API_PORT', '8000')}", api_key=api_key)


_RENDITION = re.compile(r"^(?:(?P<name>[a-z0-9][a-z0-9_-]{0,31})=)?(?P<w>\d+)x(?P<h>\d+)(?::(?P<rest>.*))?$")
RENDITION_HELP = (
    "An extra output per image made from the same render, [NAME=]WxH[:FORMAT][:QUALITY][:contain], "
    "e.g. thumb=512x512:webp:85 (repeatable). A white-background main image made from the cutout (place and "
    "inpaint jobs): main=2000x2000:jpeg:white[:fill=0.85]."
)


HINT = "--rendition"


def parse_renditions(specs: tuple[str, ...]) -> list[dict[str, Any]] | None:
    """`thumb=512x512:webp:85` -> {"name": "thumb", "width": 512, ...}; the API checks the values."""
    out = []
    for spec in specs:
        m = _RENDITION.match(spec.strip())
        if m is None:
            raise click.BadParameter(
                f"{spec!r}: expected [NAME=]WxH[:FORMAT][:QUALITY][:contain]", param_hint="--rendition"
            )
        item: dict[str, Any] = {"width": int(m["w"]), "height": int(m["h"])}
        if m["name"]:
            item["name"] = m["name"]
        for part in filter(None, (m["rest"] or "").split(":")):
            if part in ("png", "webp", "jpeg"):
                item["format"] = part
            elif part in ("cover", "contain"):
                item["fit"] = part
            elif part.isdigit():
                item["quality"] = int(part)
            elif part == "white":
                item["background"] = "white"
            elif part.startswith("fill=") and _is_number(part[5:]):
                item["fill"] = float(part[5:])
            else:
                raise click.BadParameter(
                    f"{spec!r}: {part!r} is not a format, quality or fit", param_hint="--rendition"
                )
        out.append(item)
    return out or None


LORA_HELP = "A LoRA adapter (see `zfarm loras list`), NAME or NAME:SCALE, e.g. brand-x:0.8 (repeatable, at most 3)."


def parse_loras(specs: tuple[str, ...]) -> list[dict[str, Any]] | None:
    """`brand-x:0.8` -> {"name": "brand-x", "scale": 0.8}; without a scale the adapter's default applies."""
    out: list[dict[str, Any]] = []
    for spec in specs:
        name, _, scale = spec.strip().partition(":")
        item: dict[str, Any] = {"name": name}
        if scale:
            try:
                item["scale"] = float(scale)
            except ValueError:
                raise click.BadParameter(f"{spec!r}: expected NAME or NAME:SCALE", param_hint="--lora") from None
        out.append(item)
    return out or None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _print_job(job: Job) -> None:
    click.echo(json.dumps(job, indent=2, default=str))


def wait_with_bar(client: Client, job_id: str, timeout: float | None) -> Job:
    """Waits on the job's event stream with a bar of denoising steps (written to stderr by tqdm)."""
    with tqdm(total=None, desc=f"job {job_id[:8]}", unit="step", leave=True) as bar:

        def update(job: Job) -> None:
            progress = job["progress"]
            if bar.total is None and progress["total"]:
                bar.reset(total=progress["total"])
            bar.update((progress["step"] or 0) - bar.n)
            bar.set_postfix_str(f"{job['status']} ({progress['phase']})")

        return client.wait(job_id, timeout=timeout, on_update=update)


@click.command()
@click.argument("prompt")
@click.option("--negative-prompt", default=None, help="What to keep out of the image (used when guidance > 0).")
@click.option("--preset", default=None, help="A preset's size and format (`zfarm presets`); options given win.")
@click.option(
    "--enhance",
    is_flag=True,
    default=None,
    help="Add lighting and quality words chosen by rules (the record's adjustments say which).",
)
@click.option("--width", type=int, default=None, help="256..2048, a multiple of 16  [default: 1024, or the preset's]")
@click.option("--height", type=int, default=None, help="256..2048, a multiple of 16  [default: 1024, or the preset's]")
@click.option("--steps", type=int, default=None, help="Denoising steps, 1..50  [default: 8]")
@click.option("--guidance-scale", type=float, default=None, help="0..20; 0 turns the negative prompt off  [default: 0]")
@click.option("--seed", type=int, default=None, help="0..2^63-1; the same seed gives the same image  [default: random]")
@click.option("--num-images", "-n", type=int, default=None, help="Images from consecutive seeds, 1..8  [default: 1]")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["png", "webp", "jpeg"]),
    default=None,
    help="[default: png, or the preset's]",
)
@click.option(
    "--precision",
    type=click.Choice(["bf16", "fp8"]),
    default=None,
    help="bf16 (default, exact) or fp8 (faster, not exact; needs a worker started with ZFARM_PRECISION=fp8).",
)
@click.option("--rendition", "renditions", multiple=True, help=RENDITION_HELP)
@click.option("--lora", "loras", multiple=True, help=LORA_HELP)
@click.option("--add-trigger-words", is_flag=True, default=None, help="Prepend the adapters' trigger words.")
@click.option("--image", default=None, help="Input image: a file (uploaded first) or an asset id.")
@click.option("--mask", default=None, help="inpaint: a mask file (white repaints) or an asset id.")
@image_mode_options
@click.option("--callback-url", default=None, help="Receives a signed POST (job.finished) when the job ends.")
@click.option("--wait/--no-wait", default=False, show_default=True, help="Wait for the job, with a progress bar.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None, help="With --wait: download images here.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@url_option
@key_option
def submit(
    prompt: str,
    wait: bool,
    out: Path | None,
    timeout: float | None,
    url: str | None,
    api_key: str | None,
    renditions: tuple[str, ...],
    loras: tuple[str, ...],
    **params: Any,
) -> None:
    """Submit one job; prints its id (and with --wait, its final record)."""
    params["renditions"] = parse_renditions(renditions)
    params["loras"] = parse_loras(loras)
    params.update(mode_fields(params))
    with _client(url, api_key) as client:
        try:
            job = client.submit(prompt, **params)
        except (ZfarmError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(job["id"])
        if not wait:
            return
        job = wait_with_bar(client, job["id"], timeout)
        if out is not None and job["status"] == "succeeded":
            for path in client.download(job["id"], out):
                click.echo(f"wrote {path}")
        _print_job(job)
        if job["status"] != "succeeded":
            raise click.ClickException(f"job {job['id']} ended {job['status']}: {job['error']}")


@click.command()
@click.argument("job_or_batch_id")
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True)
@url_option
@key_option
def fetch(job_or_batch_id: str, out: Path, url: str | None, api_key: str | None) -> None:
    """Download a job's images, or a batch's images (named by key) and manifest, into a directory."""
    with _client(url, api_key) as client:
        try:
            paths = _fetch(client, job_or_batch_id, out)
        except ZfarmError as exc:
            raise click.ClickException(str(exc)) from exc
    if not paths:
        raise click.ClickException(f"{job_or_batch_id} has no images yet")
    for path in paths:
        click.echo(f"wrote {path}")


def _fetch(client: Client, some_id: str, out: Path) -> list[Path]:
    # Job and batch ids never collide (both random 128-bit): whichever exists is the one meant.
    try:
        client.get_batch(some_id)
    except ZfarmError as exc:
        if exc.status_code != 404:
            raise
        return client.download(some_id, out)
    return client.download_batch(some_id, out)


@click.command()
@url_option
@key_option
def workers(url: str | None, api_key: str | None) -> None:
    """List the workers with their GPU, memory policy, state and last heartbeat."""
    with _client(url, api_key) as client:
        for w in client.workers():
            click.echo(
                f"{w['name']:<28} {w['state']:<8} {w['gpu_name'] or w['device']:<30} "
                f"policy={w['memory_policy']} jobs={w['jobs_done']} heartbeat={w['last_heartbeat']}"
                + "".join(f" lora={a['name']}{'*' if a['in_slot'] else ''}" for a in w.get("adapters", []))
            )
            if w.get("error"):
                click.echo(f"{'':<28} why: {w['error']}")
