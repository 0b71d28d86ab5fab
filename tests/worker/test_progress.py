"""The progress reporter writes steps to the job row at most twice a second, always the last, never failing."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from migrations.runner import upgrade
from models import Job, JobStatus, make_engine, make_session_factory
from worker.progress import report_progress


def test_steps_are_written_rate_limited_and_passed_on(tmp_path: Path) -> None:
    # given: a running job and a clock the test moves
    url = f"sqlite:///{tmp_path / 'z.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    with sessions() as s:
        job = Job(prompt="p", width=256, height=256, steps=8, guidance_scale=0.0, seed=1, status=JobStatus.RUNNING)
        s.add(job)
        s.commit()
    now, written, passed_on = [0.0], [], []

    def read() -> tuple[int | None, int | None]:
        with sessions() as s:
            return s.execute(select(Job.progress_step, Job.progress_total).where(Job.id == job.id)).one()

    on_step = report_progress(job.id, sessions, lambda step, total: passed_on.append(step), clock=lambda: now[0])
    # when: eight steps 0.2 s apart
    for step in range(1, 9):
        on_step(step, 8)
        written.append(read())
        now[0] += 0.2
    # then: step 1 at once, then every 0.5 s (steps 4 and 7), and the last step always
    assert [w[0] for w in written] == [1, 1, 1, 4, 4, 4, 7, 8]
    assert written[-1] == (8, 8)
    assert passed_on == list(range(1, 9))


def test_progress_of_a_job_no_longer_running_is_not_written(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'z.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    with sessions() as s:
        job = Job(prompt="p", width=256, height=256, steps=8, guidance_scale=0.0, seed=1, status=JobStatus.CANCELED)
        s.add(job)
        s.commit()
    report_progress(job.id, sessions)(3, 8)
    with sessions() as s:
        assert s.get(Job, job.id).progress_step is None
