"""A store that refuses: credentials revoked while the farm runs fail the job with the reason; a worker or an
API whose store refuses or does not answer at start stops with one line naming the URL and the reason.

Credentials are checked only when moto runs with IAM auth on: this test starts its own moto server in a
subprocess (auth on, so it must not share the session's server), makes an admin user and a worker user,
and revokes the worker's key once the worker is up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.farm_helpers import REPO, live_farm, wait_for, worker_env
from worker.start_failure import START_FAILED_EXIT
from zfarm.launcher.redis_server import free_port

pytestmark = pytest.mark.e2e
ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@pytest.fixture
def iam_moto(tmp_path: Path) -> Iterator[str]:
    pytest.importorskip("moto.server", reason="moto[server] is in the dev extra: pip install -e '.[dev]'")
    port = free_port()
    log = (tmp_path / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(endpoint), 30, "moto to listen")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _answers(endpoint: str) -> bool:
    try:
        return httpx.get(f"{endpoint}/moto-api/").status_code < 500
    except httpx.HTTPError:
        return False


def _user(iam: object, name: str) -> dict[str, str]:
    iam.create_user(UserName=name)  # type: ignore[attr-defined]
    iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=ALLOW_ALL)  # type: ignore[attr-defined]
    key = iam.create_access_key(UserName=name)["AccessKey"]  # type: ignore[attr-defined]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_revoked_credentials_fail_the_job_with_the_reason_and_stop_a_new_worker(
    iam_moto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    # given: an admin (the API and this test) and a worker user, then IAM auth turned on
    setup = {"endpoint_url": iam_moto, "region_name": "us-east-1"}
    iam = boto3.client("iam", aws_access_key_id="x", aws_secret_access_key="x", **setup)
    admin, worker = _user(iam, "admin"), _user(iam, "worker")
    boto3.client("s3", aws_access_key_id="x", aws_secret_access_key="x", **setup).create_bucket(Bucket="zfarm-iam")
    httpx.post(f"{iam_moto}/moto-api/reset-auth", content=b"0").raise_for_status()
    for name, value in {**admin, "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    url, db, api_dir, worker_dir = "s3://zfarm-iam/farm", tmp_path / "db", tmp_path / "api", tmp_path / "worker"
    db.mkdir()
    storage = {"ZFARM_STORAGE_URL": url, "ZFARM_S3_ENDPOINT_URL": iam_moto}
    with live_farm(
        f"sqlite:///{db / 'zfarm.db'}",
        api_dir,
        settings_overrides={"model": "tiny", "storage_url": url, "s3_endpoint_url": iam_moto},
        worker_dir=worker_dir,
        **storage,
        **worker,
    ) as farm:
        ok = farm.submit(prompt="a stool", steps=2)
        assert farm.wait_job(ok)["status"] == "succeeded"
        # when: the worker's key is revoked while it runs, and a job comes
        admin_iam = boto3.client(
            "iam",
            aws_access_key_id=admin["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=admin["AWS_SECRET_ACCESS_KEY"],
            **setup,
        )
        admin_iam.delete_access_key(UserName="worker", AccessKeyId=worker["AWS_ACCESS_KEY_ID"])
        refused = farm.submit(prompt="a bench", steps=2)
        record = farm.wait_job(refused)
    # then: the job failed with the store's reason (not left running, not succeeded without its bytes)
    assert record["status"] == "failed" and record["images"] == []
    assert record["error"].startswith(f"storing failed: StorageError: writing s3://zfarm-iam/farm/jobs/{refused[:2]}/")
    assert "InvalidAccessKeyId (HTTP 403)" in record["error"]
    # and a worker started with that key stops at once, one line naming the store and why
    env = worker_env(f"sqlite:///{db / 'zfarm.db'}", tmp_path / "w2", "late@localhost", **storage, **worker)
    late = subprocess.run(
        [sys.executable, "-m", "zfarm.cli", "worker"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert late.returncode == START_FAILED_EXIT  # `zfarm up` reports it and stops; it does not restart it
    assert late.stderr.strip().splitlines()[-1] == (
        f"Error: worker late@localhost cannot start: storage {url} at {iam_moto} cannot be used: access refused with "
        "these credentials (403 (HTTP 403): Forbidden)"
    )


def test_an_api_whose_store_does_not_answer_stops_with_the_url_and_the_reason(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = worker_env(
        f"sqlite:///{tmp_path / 'zfarm.db'}",
        tmp_path,
        "unused",
        ZFARM_STORAGE_URL="s3://zfarm-nowhere",
        ZFARM_S3_ENDPOINT_URL=dead,
        ZFARM_STORAGE_TIMEOUT_SECONDS="1",
        ZFARM_API_PORT=str(free_port()),
        AWS_ACCESS_KEY_ID="zfarm-test",
        AWS_SECRET_ACCESS_KEY="zfarm-test",
        AWS_DEFAULT_REGION="us-east-1",
    )
    api = subprocess.run(
        [sys.executable, "-m", "zfarm.cli", "api"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert api.returncode == 1
    line = api.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"Error: zfarm api cannot start: storage s3://zfarm-nowhere at {dead} cannot be used: EndpointConnectionError"
    ), api.stderr
