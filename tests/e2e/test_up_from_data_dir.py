"""`cd $D && ZFARM_DATA_DIR=$D python -m zfarm.cli up`, twice (issue 17, item 2).

`python -m` puts the working directory first on the import path. The data dir's tiny-model cache was called
`models/`, so the second start (the cache now existed) imported it instead of the farm's `models` package.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.core.test_data_layout import importable_name, project_packages
from tests.e2e.up_process import alive, kill_tree, process_tree, ready_workers, start_up, up_env
from tests.farm_helpers import wait_for
from zfarm.client import Client
from zfarm.launcher.redis_server import free_port

pytestmark = pytest.mark.e2e


def test_a_farm_started_inside_its_data_dir_starts_again_and_the_cli_runs_there(tmp_path: Path) -> None:
    # given: a data dir that is also the working directory
    data = tmp_path / "data"
    data.mkdir()
    env = up_env(data, free_port(), free_port())
    url = f"http://127.0.0.1:{env['ZFARM_API_PORT']}"
    env["ZFARM_URL"] = url
    for run in (1, 2):
        if run == 2:
            # A package of the farm that only its children import (`zfarm up` itself never loads the API): a
            # child that imported from the working directory would get this one and die.
            (data / "api").mkdir()
            (data / "api" / "__init__.py").write_text('raise ImportError("api imported from the working directory")\n')
        # when: started from inside it, as `cd $D && python -m zfarm.cli up`, a job, `python -m zfarm.cli workers`
        log = tmp_path / f"up{run}.log"
        code, tree = _serve_one_job_then_stop(env, log, data, check_layout=run == 1)
        # then: it started, served and stopped cleanly, both times
        assert code == 0, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
        assert alive(tree) == []


def _serve_one_job_then_stop(
    env: dict[str, str], log: Path, data: Path, check_layout: bool
) -> tuple[int, list[psutil.Process]]:
    up = start_up(env, log, cwd=data)
    tree: list[psutil.Process] = []
    try:
        with Client(env["ZFARM_URL"]) as client:
            wait_for(lambda: up.poll() is not None or ready_workers(client), 240, "a ready worker", 0.5)
            assert up.poll() is None, log.read_text()[-3000:]
            tree = process_tree(up)
            job = client.submit("a teapot", width=256, height=256, seed=1)
            assert client.wait(job["id"], timeout=120)["status"] == "succeeded"
        listed = subprocess.run(
            [sys.executable, "-m", "zfarm.cli", "workers"],
            env=env,
            cwd=data,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0 and "ready" in listed.stdout, listed.stderr + listed.stdout
        if check_layout:
            # nothing the farm wrote into its data dir is named like one of its packages
            clashes = {importable_name(e) for e in data.iterdir()} & project_packages()
            assert clashes == set(), sorted(p.name for p in data.iterdir())
        up.send_signal(signal.SIGINT)
        return up.wait(timeout=120), tree
    finally:
        kill_tree(up, tree)
