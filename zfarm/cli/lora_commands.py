"""`zfarm loras`: add, list, show and remove LoRA adapters (brand styles). zfarm.client (httpx) only."""

from __future__ import annotations

import json
from pathlib import Path

import click

from zfarm.cli.client_commands import _client, key_option, url_option
from zfarm.client import Lora, ZfarmError


@click.group()
def loras() -> None:
    """LoRA adapters: upload a .safetensors file under a name, then name it in jobs (--lora NAME:SCALE)."""


@loras.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="The name jobs and catalog rows use, e.g. brand-x.")
@click.option("--trigger-words", default=None, help="Words the adapter was trained on (jobs may prepend them).")
@click.option("--default-scale", type=float, default=None, help="Scale when a job names no scale (default 1).")
@click.option("--everyone", is_flag=True, help="Admin keys: publish it to every tenant.")
@url_option
@key_option
def add(
    path: Path,
    name: str,
    trigger_words: str | None,
    default_scale: float | None,
    everyone: bool,
    url: str | None,
    api_key: str | None,
) -> None:
    """Upload an adapter (checked: safetensors, Z-Image transformer modules, rank <= 256); prints its record."""
    with _client(url, api_key) as client:
        try:
            lora = client.add_lora(
                path, name, trigger_words=trigger_words, default_scale=default_scale, everyone=everyone
            )
        except ZfarmError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(lora, indent=2))


@loras.command("list")
@url_option
@key_option
def list_(url: str | None, api_key: str | None) -> None:
    """The adapters you may use: yours and those published to every tenant."""
    with _client(url, api_key) as client:
        for lora in client.loras():
            click.echo(_line(lora))


def _line(lora: Lora) -> str:
    shared = " (every tenant)" if lora["shared"] else ""
    words = f' trigger="{lora["trigger_words"]}"' if lora["trigger_words"] else ""
    return (
        f"{lora['name']:<24} rank={lora['rank']:<4} alpha={lora['alpha']:g} scale={lora['default_scale']:g} "
        f"{lora['bytes'] / 2**20:8.1f} MiB sha256={lora['sha256'][:12]}{words}{shared}"
    )


@loras.command("show")
@click.argument("name")
@url_option
@key_option
def show(name: str, url: str | None, api_key: str | None) -> None:
    """One adapter's record: sha256, rank, alpha, the modules it changes."""
    with _client(url, api_key) as client:
        try:
            click.echo(json.dumps(client.get_lora(name), indent=2))
        except ZfarmError as exc:
            raise click.ClickException(str(exc)) from exc


@loras.command("rm")
@click.argument("name")
@url_option
@key_option
def rm(name: str, url: str | None, api_key: str | None) -> None:
    """Delete an adapter (refused while queued or running jobs use it)."""
    with _client(url, api_key) as client:
        try:
            client.delete_lora(name)
        except ZfarmError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"deleted {name}")
