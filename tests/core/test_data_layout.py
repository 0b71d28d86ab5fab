"""The data dir's entries never take the name of one of the farm's packages (issue 17, item 2)."""

from __future__ import annotations

import importlib.machinery
import tomllib
from pathlib import Path

from core import data_layout
from core.settings import FarmSettings
from tests.farm_helpers import REPO


def project_packages() -> set[str]:
    """Top-level packages and modules importable from a checkout: the installed ones and the rest (tests ...)."""
    found = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}
    found |= {p.stem for p in REPO.glob("*.py")}
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    found |= {name.rstrip("*") for name in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    return found


def importable_name(entry: Path) -> str | None:
    """The name `import` would find this entry under from the working directory (a folder: with or without
    an `__init__.py`; a file: a source or extension module), else None."""
    if not entry.suffix and entry.name.isidentifier() and (entry.is_dir() or not entry.exists()):
        return entry.name
    if entry.is_file() and entry.suffix in importlib.machinery.all_suffixes() and entry.stem.isidentifier():
        return entry.stem
    return None


def test_no_data_dir_entry_is_named_like_a_package_of_the_project(tmp_path: Path) -> None:
    assert {"models", "worker", "api", "core", "zfarm"} <= project_packages()  # the helper sees the packages
    clashes = {importable_name(tmp_path / name) for name in data_layout.ENTRIES} & project_packages()
    assert clashes == set()


def test_the_settings_place_everything_under_a_listed_entry(tmp_path: Path) -> None:
    s = FarmSettings(data_dir=tmp_path)
    paths = [s.storage_dir, s.lora_cache_dir, s.compile_cache_dir, s.models_dir]
    paths.append(Path(s.resolved_database_url.removeprefix("sqlite:///")))
    assert {p.relative_to(tmp_path.resolve()).parts[0] for p in paths if p} <= set(data_layout.ENTRIES)


def test_an_old_model_cache_is_moved_to_its_new_name(tmp_path: Path) -> None:
    # given: a data dir from before issue 17
    (tmp_path / "models" / "tiny-v1").mkdir(parents=True)
    (tmp_path / "models" / "tiny-v1" / "config.json").write_text("{}")
    # when / then: moved once
    assert data_layout.move_old_model_cache(tmp_path) is True
    assert (tmp_path / "model-cache" / "tiny-v1" / "config.json").read_text() == "{}"
    assert not (tmp_path / "models").exists()
    assert data_layout.move_old_model_cache(tmp_path) is False


def test_a_models_package_or_a_cache_already_moved_is_left_alone(tmp_path: Path) -> None:
    # given: a data dir pointed at a checkout (`models/` is the package) ...
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("")
    assert data_layout.move_old_model_cache(tmp_path) is False
    assert (tmp_path / "models" / "__init__.py").exists() and not (tmp_path / "model-cache").exists()
    # ... and one where both names exist: the new cache is kept as it is
    (tmp_path / "models" / "__init__.py").unlink()
    (tmp_path / "model-cache").mkdir()
    assert data_layout.move_old_model_cache(tmp_path) is False
    assert (tmp_path / "models").is_dir() and (tmp_path / "model-cache").is_dir()
