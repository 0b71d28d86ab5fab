"""What `ZFARM_DATA_DIR` holds, entry by entry, in one list.

`python -m` puts the working directory first on the import path, and the editable install finds the farm's
own packages only after it: a farm started from inside its data dir imported a folder of the data dir named
like one of its packages (the tiny-model cache was `models/`) instead of the package. Every name here is
one that Python cannot import (a hyphen, a dot, no `.py`) or that no package of the project uses;
tests/core/test_data_layout.py holds the list against the packages.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

DATABASE_FILE = "zfarm.db"  # SQLite, with its -wal and -shm files beside it
IMAGES_DIR = "images"
LORA_CACHE_DIR = "lora-cache"
COMPILE_CACHE_DIR = "compile-cache"
MODEL_CACHE_DIR = "model-cache"  # the tiny test model, built once per version
REDIS_DIR = "redis"  # the embedded Redis' append-only files and log
WEBHOOK_SECRET_FILE = "webhook_secret"
LOGS_DIR = "logs"  # `zfarm demo`: its children's output
DEMO_DIR = "demo"  # `zfarm demo`: its images and manifest

ENTRIES = (
    DATABASE_FILE,
    IMAGES_DIR,
    LORA_CACHE_DIR,
    COMPILE_CACHE_DIR,
    MODEL_CACHE_DIR,
    REDIS_DIR,
    WEBHOOK_SECRET_FILE,
    LOGS_DIR,
    DEMO_DIR,
)

# Before issue 17 the model cache was `models/`, the name of the farm's table package.
OLD_MODEL_CACHE_DIR = "models"


def move_old_model_cache(data_dir: Path) -> bool:
    """Renames an old data dir's `models/` to `model-cache/` (True when it did). Where both exist the new
    one is kept and the old one is left alone: it is only a cache, but it is not ours to delete unasked."""
    old, new = data_dir / OLD_MODEL_CACHE_DIR, data_dir / MODEL_CACHE_DIR
    # A `models/` with an `__init__.py` is the package itself (ZFARM_DATA_DIR pointed at a checkout): never moved.
    if not old.is_dir() or (old / "__init__.py").exists() or new.exists():
        return False
    with contextlib.suppress(FileNotFoundError):  # another process of the farm moved it first
        old.rename(new)
        return True
    return False
