"""`zfarm up`'s supervisor with real (small) child processes: restarts, giving up, warm and cold stops."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import FarmSettings
from models import make_engine
from zfarm.launcher.embedded import Farm
from zfarm.launcher.supervision import Child, RestartBudget, StopSignals, describe_exit, stop_children


def _python(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)


def _child(name: str, code: str, **fields: object) -> Child:
    return Child(name, _python(code), lambda: _python(code), **fields)  # type: ignore[arg-type]


SLEEPS = "import time; time.sleep(60)"
IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); " + SLEEPS


def _handler_installed(child: Child) -> None:
    assert child.proc.stdout is not None and child.proc.stdout.readline() == b"1\n"


def test_restart_budget_doubles_its_back_off_and_refuses_past_the_limit_within_the_window() -> None:
    budget = RestartBudget(limit=5, window=600)
    assert [budget.take(t) for t in (0, 1, 2, 3, 4)] == [1, 2, 4, 8, 16]
    assert budget.take(5) is None  # a sixth death within ten minutes: give up
    assert budget.take(601) == 16  # the first restart left the window: one more is allowed
    assert RestartBudget(limit=9, max_backoff=30).take(0) == 1


def test_a_child_that_keeps_dying_is_restarted_then_the_farm_gives_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    farm = Farm(FarmSettings(data_dir=tmp_path))
    farm.children.append(
        _child("webhooks", "import sys; sys.exit(7)", budget=RestartBudget(limit=2, first_backoff=0.05))
    )
    assert farm.wait(StopSignals()) == 1
    err = capsys.readouterr().err
    assert "zfarm: webhooks exited with code 7; restarting it in 0.05 s (restart 1 of at most 2 in 10 min)" in err
    assert "restarting it in 0.1 s (restart 2 of at most 2 in 10 min)" in err
    assert "webhooks exited with code 7; it was restarted 2 times in 10 min: giving up, stopping the farm" in err
    farm.stop()


def test_flower_past_its_budget_is_given_up_on_and_the_farm_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    farm = Farm(FarmSettings(data_dir=tmp_path))
    flower = _child("flower", "import sys; sys.exit(1)", budget=RestartBudget(limit=1, first_backoff=0.05))
    farm.children.append(flower)
    engine = make_engine(farm.settings.resolved_database_url)
    try:
        assert farm.on_exit(engine, flower, flower.proc.wait()) is None  # the one restart it has
        assert farm.on_exit(engine, flower, 1) is None and flower.given_up
    finally:
        engine.dispose()
        farm.stop()
    assert "flower exited with code 1; it was restarted 1 times in 10 min: giving up on it, the farm goes on" in (
        capsys.readouterr().err
    )


def test_a_worker_that_could_not_start_is_not_restarted_and_the_others_go_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    farm = Farm(FarmSettings(data_dir=tmp_path))
    engine = make_engine(farm.settings.resolved_database_url)  # no tables: the row's reason is not found
    failed, other = _child("gpu1@host", "import sys; sys.exit(3)"), _child("gpu0@host", SLEEPS)
    farm.children += [failed, other]
    try:
        # when: one card's worker exits with the start-failure code
        assert farm.on_exit(engine, failed, failed.proc.wait()) is None
        # then: it is left down, the other worker runs on
        assert failed.given_up and failed.restart_at is None and other.proc.poll() is None
        assert "zfarm: worker gpu1@host could not start (exit code 3); not restarted, the other workers go on" in (
            capsys.readouterr().err
        )
        # when the last one fails too, the farm stops: nothing could render the jobs it accepts
        other.proc.kill()
        other.proc.wait()
        assert farm.on_exit(engine, other, 3) == 1
        assert "stopping the farm (no worker left)" in capsys.readouterr().err
    finally:
        engine.dispose()
        farm.stop()


def test_warm_stop_signals_main_processes_and_kills_one_that_outlasts_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stubborn, polite = _child("api", IGNORES_SIGTERM), _child("flower", SLEEPS)
    _handler_installed(stubborn)
    stop_children([stubborn, polite], StopSignals(count=1), timeout=1.0)
    assert polite.proc.returncode == -15  # SIGTERM
    assert stubborn.proc.returncode == -9  # outlasted the timeout
    assert "zfarm: api did not stop in time; killing it" in capsys.readouterr().err


def test_a_second_stop_signal_makes_the_stop_cold(capsys: pytest.CaptureFixture[str]) -> None:
    # A Celery worker takes SIGQUIT as its cold shutdown; this stand-in ignores SIGTERM like a busy warm one.
    worker = _child("cpu0@host", IGNORES_SIGTERM)
    _handler_installed(worker)
    stop_children([worker], StopSignals(count=2), timeout=60)
    assert worker.proc.returncode == -3  # SIGQUIT, long before the 60 s
    assert "zfarm: cold stop: running jobs are cut off and run again at the next start" in capsys.readouterr().err


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(-9) == "was killed by SIGKILL"
