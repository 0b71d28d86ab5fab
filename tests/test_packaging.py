"""`pip install zfarm` is the client: httpx, click and tqdm only; the farm's parts come with the extras."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
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


def test_a_built_package_carries_the_sync_client_generated_from_the_async_one(tmp_path: Path) -> None:
    # The repository holds only the async source; the build (setup.py's build_py) writes the sync twin.
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    source = tmp_path / "src"
    for name in tracked.splitlines():
        if (REPO / name).is_file() and not name.startswith(("tests/", "docs/", "bench/")):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    assert not (source / "zfarm/client/_sync/client.py").exists()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=240,
    )
    [wheel] = tmp_path.glob("zfarm-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        generated = zf.read("zfarm/client/_sync/client.py").decode()
    assert "class Client:" in generated and "async def" not in generated and "await " not in generated
