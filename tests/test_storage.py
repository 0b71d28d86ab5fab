from __future__ import annotations

from pathlib import Path

import pytest

from core.storage import LocalStorage, image_key

JOB = "0123456789abcdef0123456789abcdef"


def test_keys_are_built_from_job_id_and_index_only() -> None:
    assert image_key(JOB, 2, "jpeg") == f"jobs/01/{JOB}/2.jpg"
    with pytest.raises(ValueError, match="32 lowercase hex"):
        image_key("../../etc/passwd", 0, "png")


def test_put_overwrites_and_refuses_foreign_keys(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    key = image_key(JOB, 0, "png")
    store.put(key, b"one")
    store.put(key, b"two")
    assert store.open(key).read() == b"two"
    assert [p.name for p in store.path(key).parent.iterdir()] == ["0.png"]  # no temp files left
    for bad in ("../x.png", "/etc/passwd", "jobs/../../x"):
        with pytest.raises(ValueError, match="not a server-built key"):
            store.put(bad, b"x")
