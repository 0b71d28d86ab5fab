"""Memory policy choice. The GPU is the one thing faked here: its free-memory reading."""

from __future__ import annotations

import pytest

from worker import memory

GIB = 1024**3


@pytest.mark.parametrize(
    ("free_gib", "expected"), [(80, "full"), (24, "full"), (16, "model-offload"), (10, "sequential-offload")]
)
def test_auto_policy_follows_free_vram(monkeypatch: pytest.MonkeyPatch, free_gib: int, expected: str) -> None:
    monkeypatch.setattr(memory.torch.cuda, "mem_get_info", lambda: (free_gib * GIB, 80 * GIB))
    assert memory.choose_policy("auto", "cuda") == expected


def test_explicit_policy_is_kept_and_cpu_is_always_full() -> None:
    assert memory.choose_policy("model-offload", "cuda") == "model-offload"
    assert memory.choose_policy("sequential-offload", "cpu") == "full"
    with pytest.raises(ValueError, match="memory_policy must be one of"):
        memory.choose_policy("half", "cuda")


def test_stricter_policy_order() -> None:
    assert memory.stricter("full") == "model-offload"
    assert memory.stricter("model-offload") == "sequential-offload"
    assert memory.stricter("sequential-offload") is None
