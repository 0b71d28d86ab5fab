from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import FarmSettings


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("ZFARM_API_PORT", "70000", "less than or equal to 65535"),
        ("ZFARM_MEMORY_POLICY", "most", "'auto', 'full', 'model-offload' or 'sequential-offload'"),
        ("ZFARM_DATABASE_URL", "zfarm.db", "must be a URL with a scheme"),
        ("ZFARM_DEVICE", "tpu", "'auto', 'cpu' or 'cuda'"),
        ("ZFARM_MAX_ATTEMPTS", "0", "greater than or equal to 1"),
        ("ZFARM_LORA_MODE", "fused", "'auto', 'merge' or 'slot'"),
    ],
)
def test_bad_farm_settings_raise(monkeypatch: pytest.MonkeyPatch, env: str, value: str, fragment: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError, match=fragment):
        FarmSettings()


def test_broker_settings_refuse_non_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZFARM_REDIS_URL", "amqp://localhost")
    with pytest.raises(ValidationError, match="must start with redis://"):
        FarmSettings()


def test_visibility_timeout_exceeds_the_hard_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZFARM_JOB_TIME_LIMIT_SECONDS", "600")
    s = FarmSettings()
    assert s.visibility_timeout > s.job_time_limit_seconds


def test_default_database_is_sqlite_in_the_data_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = FarmSettings(data_dir=tmp_path)
    assert s.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'zfarm.db'}"
