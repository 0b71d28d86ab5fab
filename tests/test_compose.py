"""compose.yaml: what an operator needs is in it, and Docker Compose itself accepts it (where it is installed)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.farm_helpers import REPO

COMPOSE = REPO / "compose.yaml"
SECRETS = {
    "POSTGRES_PASSWORD": "pg-pass",
    "ZFARM_FLOWER_PASSWORD": "fl-pass",
    "ZFARM_WEBHOOK_SECRET": "s" * 32,
    "S3_SECRET_KEY": "s3-secret",
}
LONG_RUNNING = ("redis", "postgres", "minio", "api-a", "api-b", "proxy", "worker-gpu0", "webhooks", "flower")


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_holds_the_farm_with_durable_volumes_auth_and_health_checks() -> None:
    services = _services()
    assert set(LONG_RUNNING) | {"migrate"} <= set(services)
    # Redis keeps every queued message: append-only file on, never evicts
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"
    # the schema is migrated once, and the bucket made, before anything that uses them starts
    for name in ("api-a", "api-b", "worker-gpu0", "webhooks"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    for name in ("api-a", "api-b", "worker-gpu0"):
        assert services[name]["depends_on"]["bucket"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["command"] == ["migrate"]
    # one worker per card, pinned by device id
    [device] = services["worker-gpu0"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["device_ids"] == ["0"] and device["capabilities"] == ["gpu"]
    # Flower never runs open
    assert any(arg.startswith("--basic-auth=") for arg in services["flower"]["entrypoint"])
    # every long-running service says whether it is healthy
    for name in LONG_RUNNING:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    # two API replicas behind the proxy, which alone publishes the API's port
    assert services["api-a"] == services["api-b"] and services["api-a"]["command"] == ["api"]
    assert "ports" not in services["api-a"] and services["proxy"]["ports"] == ["8000:8000"]
    conf = (REPO / "ops/nginx/zfarm.conf").read_text()
    assert "server api-a:8000" in conf and "server api-b:8000" in conf
    # storage is the bucket: every process has the storage settings, and no service mounts a shared image volume
    env = services["api-a"]["environment"]
    assert env["ZFARM_STORAGE_URL"].startswith("${ZFARM_STORAGE_URL:-s3://")
    assert env["ZFARM_S3_ENDPOINT_URL"] == "${ZFARM_S3_ENDPOINT_URL:-http://minio:9000}"
    assert services["worker-gpu0"]["environment"]["ZFARM_STORAGE_URL"] == env["ZFARM_STORAGE_URL"]
    # named volumes: database, Redis, the bucket's disk, Hugging Face cache (this host's copy of the weights)
    mounts = {name: set(services[name].get("volumes", [])) for name in services}
    assert "pg-data:/var/lib/postgresql/data" in mounts["postgres"]
    assert "redis-data:/data" in mounts["redis"]
    assert "s3-data:/data" in mounts["minio"]
    assert mounts["worker-gpu0"] == {"hf-cache:/hf-cache"}
    assert not mounts["api-a"] and not mounts["api-b"]
    assert {"redis-data", "pg-data", "s3-data", "hf-cache"} <= set(yaml.safe_load(COMPOSE.read_text())["volumes"])
    assert "images" not in yaml.safe_load(COMPOSE.read_text())["volumes"]


def test_docker_compose_accepts_the_file_and_refuses_missing_secrets() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose here (neither the `docker compose` plugin nor `docker-compose`)")
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    ok = subprocess.run([*command, "-f", str(COMPOSE), "config", "-q"], env={**env, **SECRETS}, capture_output=True)
    assert ok.returncode == 0, ok.stderr.decode()
    missing = subprocess.run([*command, "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "set POSTGRES_PASSWORD" in missing.stderr + missing.stdout
