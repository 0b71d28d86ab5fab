"""Where the multi-host tests keep images: one directory every process shares (a shared mount).

Each process keeps its own data directory for everything else only once images live in object storage;
until then the directory given here is every process's ZFARM_DATA_DIR.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.storage import LocalStorage


@dataclass
class FarmStorage:
    env: dict[str, str]
    root: Path

    def read(self, key: str) -> bytes:
        with LocalStorage(self.root / "images").open(key) as fh:
            return fh.read()


@contextlib.contextmanager
def farm_storage(tmp_path: Path) -> Iterator[FarmStorage]:
    shared = tmp_path / "shared"
    shared.mkdir()
    yield FarmStorage({"ZFARM_DATA_DIR": str(shared)}, shared)
