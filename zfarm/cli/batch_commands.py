"""Batch commands of `zfarm`: batch, presets, retry-failed. They use zfarm.client (httpx) only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from zfarm.cli.client_commands import (
    LORA_HELP,
    RENDITION_HELP,
    _client,
    key_option,
    parse_loras,
    parse_renditions,
    url_option,
)
from zfarm.cli.image_options import image_mode_options, mode_fields
from zfarm.client import Batch, BatchCreated, Client, ZfarmError


def _parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected NAME=VALUE, like width=768 (got {item!r})", param_hint="--set")
        try:
            out[name.strip()] = json.loads(raw)
        except ValueError:
            out[name.strip()] = raw  # plain text, like png or a negative prompt
    return out


def wait_batch_with_bar(client: Client, batch: BatchCreated, timeout: float | None) -> Batch:
    with tqdm(total=batch["rows"], desc=f"batch {batch['id'][:8]}", unit="job") as bar:

        def update(current: Batch) -> None:
            c = current["counts"]
            bar.set_postfix_str(f"ok={c['succeeded']} running={c['running']} failed={c['failed'] + c['dead']}")
            bar.update(current["done"] - bar.n)

        return client.wait_batch(batch["id"], timeout=timeout, on_update=update)


def summary(batch: Batch) -> str:
    c = batch["counts"]
    return (
        f"batch {batch['id']} {batch['status']}: {c['succeeded']} succeeded ({batch['jobs_reused']} reused), "
        f"{c['failed']} failed, {c['dead']} dead, {c['canceled']} canceled; {batch['images_done']} image(s), "
        f"{batch['gpu_seconds']:.1f} GPU s"
    )


@click.command()
@click.argument("catalog", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--template", default=None, help="Prompt template with {column} placeholders.")
@click.option("--template-name", default=None, help="A template saved with POST /v1/templates.")
@click.option("--preset", default=None, help="A preset from `zfarm presets`.")
@click.option("--name", default=None, help="A name for the batch.")
@click.option("--key-column", default=None, help="The column that names each item  [default: sku]")
@click.option(
    "--seed", type=int, default=None, help="0..2^63-1; each row's seed derives from it and the row's key  [default: 0]"
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    help="A default for every row, NAME=VALUE (repeatable): width, height, steps, guidance_scale, num_images, "
    "output_format, quality, negative_prompt",
)
@click.option("--format", "file_format", type=click.Choice(["csv", "jsonl"]), default=None)
@click.option("--no-dedup", is_flag=True, help="Render every row, even those with finished identical images.")
@click.option("--enhance", is_flag=True, help="Add lighting and quality words by rules to every row's prompt.")
@click.option(
    "--precision", type=click.Choice(["bf16", "fp8"]), default=None, help="bf16 (default, exact) or fp8 (faster)."
)
@click.option("--rendition", "renditions", multiple=True, help=RENDITION_HELP)
@click.option("--lora", "loras", multiple=True, help=LORA_HELP + " Every row; a row's `lora` column beats it.")
@click.option("--add-trigger-words", is_flag=True, help="Prepend the adapters' trigger words to every prompt.")
@click.option(
    "--images",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="A zip (or a directory, zipped for you) of input images; the image and mask columns name its files.",
)
@image_mode_options
@click.option("--callback-url", default=None, help="Receives a signed POST (batch.finished) when the batch ends.")
@click.option("--idempotency-key", default=None, help="Send it again safely: a repeat returns the same batch.")
@click.option("--wait/--no-wait", default=False, help="Follow the batch with a progress bar and a summary.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None, help="With --wait: images + manifest.")
@click.option("--timeout", type=float, default=None)
@url_option
@key_option
def batch(
    catalog: Path,
    template: str | None,
    template_name: str | None,
    preset: str | None,
    name: str | None,
    key_column: str | None,
    seed: int | None,
    settings: tuple[str, ...],
    file_format: str | None,
    no_dedup: bool,
    enhance: bool,
    precision: str | None,
    renditions: tuple[str, ...],
    loras: tuple[str, ...],
    add_trigger_words: bool,
    callback_url: str | None,
    idempotency_key: str | None,
    wait: bool,
    out: Path | None,
    timeout: float | None,
    url: str | None,
    api_key: str | None,
    images: Path | None,
    **image_params: Any,
) -> None:
    """Submit a catalog (CSV or JSONL) with a template as one batch; prints its id."""
    defaults = _parse_set(settings)
    if loras:
        defaults["loras"] = parse_loras(loras)
    if add_trigger_words:
        defaults["add_trigger_words"] = True
    with _client(url, api_key) as client:
        try:
            created = client.upload_batch(
                catalog,
                file_format=file_format,
                idempotency_key=idempotency_key,
                template=template,
                template_name=template_name,
                preset=preset,
                name=name,
                key_column=key_column,
                seed=seed,
                defaults=defaults or None,
                dedup=False if no_dedup else None,
                enhance=True if enhance else None,
                precision=precision,
                renditions=parse_renditions(renditions),
                callback_url=callback_url,
                images=images,
                **mode_fields(image_params),
            )
        except (ZfarmError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(created["id"])
        click.echo(
            f"accepted {created['rows']} rows: {created['jobs_queued']} queued, {created['jobs_reused']} reused",
            err=True,
        )
        if not wait:
            return
        final = wait_batch_with_bar(client, created, timeout)
        click.echo(summary(final))
        if out is not None:
            paths = client.download_batch(created["id"], out)
            click.echo(f"wrote {len(paths)} file(s) to {out}")
        if final["status"] != "succeeded":
            raise click.ClickException(f"not every row succeeded; see {final['manifest_url']}")


@click.command()
@url_option
@key_option
def presets(url: str | None, api_key: str | None) -> None:
    """List the farm's presets (shipped and configured)."""
    with _client(url, api_key) as client:
        for p in client.presets():
            size = f"{p['width'] or '-'}x{p['height'] or '-'}"
            click.echo(f"{p['name']:<18} {size:<11} {p['output_format'] or '':<5} {p['description']}")


@click.command("retry-failed")
@click.argument("batch_id")
@url_option
@key_option
def retry_failed(batch_id: str, url: str | None, api_key: str | None) -> None:
    """Queue a batch's failed and dead jobs again."""
    with _client(url, api_key) as client:
        try:
            click.echo(f"requeued {client.retry_failed(batch_id)} job(s) of batch {batch_id}")
        except ZfarmError as exc:
            raise click.ClickException(str(exc)) from exc
