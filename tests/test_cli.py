"""Every console entry point resolves and answers --help; the client commands work against a live farm."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from zfarm.cli import main

COMMANDS = [
    "up",
    "api",
    "worker",
    "flower",
    "migrate",
    "demo",
    "submit",
    "status",
    "fetch",
    "workers",
    "batch",
    "presets",
    "retry-failed",
    "jobs",
    "batches",
    "cancel",
    "webhooks",
    "keys",
    "loras",
]


def test_console_script_is_installed_and_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "zfarm.cli", "--help"], capture_output=True, text=True, check=True)
    for command in COMMANDS:
        assert command in out.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_flower_refuses_to_run_without_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import get_settings

    monkeypatch.delenv("ZFARM_FLOWER_PASSWORD", raising=False)
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["flower"])
    assert result.exit_code != 0 and "ZFARM_FLOWER_PASSWORD" in result.output


def test_migrate_builds_the_database(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from core.settings import get_settings

    monkeypatch.setenv("ZFARM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ZFARM_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["migrate"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert (tmp_path / "zfarm.db").is_file()


def test_rendition_option_reads_name_size_format_quality_and_fit() -> None:
    import click

    from zfarm.cli.client_commands import parse_renditions

    assert parse_renditions(()) is None
    assert parse_renditions(("thumb=512x512:webp:85", "256x128:contain", "big=1024x1024:jpeg")) == [
        {"name": "thumb", "width": 512, "height": 512, "format": "webp", "quality": 85},
        {"width": 256, "height": 128, "fit": "contain"},
        {"name": "big", "width": 1024, "height": 1024, "format": "jpeg"},
    ]
    for bad in ("512", "thumb=512x512:gif", "Thumb=1x1"):
        with pytest.raises(click.BadParameter, match="--rendition|expected|not a format"):
            parse_renditions((bad,))


def test_image_options_make_the_request_fields() -> None:
    from zfarm.cli.client_commands import parse_renditions
    from zfarm.cli.image_options import mode_fields

    assert parse_renditions(("main=2000x2000:jpeg:white:fill=0.85",)) == [
        {"name": "main", "width": 2000, "height": 2000, "format": "jpeg", "background": "white", "fill": 0.85}
    ]
    params = {"mode": "place", "strength": None, "mask_blur": None, "mask_grow": 4, "fit": 0.6, "anchor": None}
    params.update(offset_x=-10, offset_y=None, prompt="kept")
    assert mode_fields(params) == {"mode": "place", "mask_grow": 4, "placement": {"fit": 0.6, "offset_x": -10}}
    assert params == {"prompt": "kept"}  # the mode options are taken out of the command's parameters


def test_every_deferred_import_in_the_cli_resolves() -> None:
    # Server commands import their part of the farm when they run (the API process must not import torch);
    # --help never runs them, so a renamed module would only show when the command starts. Check each here.
    import ast
    import importlib
    from pathlib import Path

    import zfarm.cli

    checked = 0
    for path in Path(zfarm.cli.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and inner.module:
                        module = importlib.import_module(inner.module)
                        for alias in inner.names:
                            assert hasattr(module, alias.name) or importlib.util.find_spec(
                                f"{inner.module}.{alias.name}"
                            ), f"{path.name}: from {inner.module} import {alias.name}"
                        checked += 1
                    elif isinstance(inner, ast.Import):
                        for alias in inner.names:
                            importlib.import_module(alias.name)
                        checked += 1
    assert checked >= 8
