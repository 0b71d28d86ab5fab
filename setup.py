"""Builds write the sync client from the async one (zfarm/client/_async -> _sync), so the repository holds
one copy of the client's logic. Everything else about the package is in pyproject.toml."""

from __future__ import annotations

import sys
from pathlib import Path

import unasync
from setuptools import setup

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))
from generate_sync_client import REPLACEMENTS  # noqa: E402

setup(cmdclass={"build_py": unasync.cmdclass_build_py(rules=[unasync.Rule("/_async/", "/_sync/", REPLACEMENTS)])})
