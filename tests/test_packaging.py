"""`pip install zfarm` is the client: httpx, click and tqdm only; the farm's parts come with the extras."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter that refuses every package a client-only install would not have.
CLIENT_ONLY = r"""
import sys

SERVER = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "celery", "kombu", "redis", "flower",
          "pydantic", "pydantic_settings", "torch", "diffusers", "transformers", "tokenizers", "PIL",
          "core", "api", "worker", "control", "models", "broker_config", "migrations"}

class ClientOnly:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in SERVER:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, ClientOnly())
from click.testing import CliRunner

from zfarm.cli import main
from zfarm.client import AsyncClient, Client

listing = CliRunner().invoke(main, ["--help"])
assert listing.exit_code == 0 and "submit" in listing.output and "up" in listing.output, listing.output
for command in ("submit", "status", "fetch", "batch", "presets", "retry-failed", "workers"):
    helped = CliRunner().invoke(main, [command, "--help"])
    assert helped.exit_code == 0, (command, helped.output)
up = CliRunner().invoke(main, ["up"])
assert up.exit_code == 1 and "pip install 'zfarm[server]'" in up.output, up.output
print("client-only ok")
"""


def test_base_install_asks_for_the_client_libraries_only() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    assert names == {"httpx", "click", "tqdm"}
    assert {"server", "worker"} <= set(project["optional-dependencies"])


def test_client_and_client_commands_run_without_the_server_packages() -> None:
    result = subprocess.run([sys.executable, "-c", CLIENT_ONLY], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "client-only ok" in result.stdout, result.stdout + result.stderr
