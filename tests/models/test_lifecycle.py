"""Every named transition from every status: legal ones move the row, illegal ones refuse and change nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import Job, JobStatus, lifecycle
from models.lifecycle import TRANSITIONS, Transition

REPO = Path(__file__).resolve().parents[2]


def _job(s: Session, status: JobStatus) -> Job:
    job = Job(prompt="p", width=256, height=256, steps=2, guidance_scale=0.0, seed=1)
    s.add(job)
    s.flush()
    job.status = status  # arranging the precondition; production code goes through models/lifecycle.py
    s.flush()
    return job


def _apply(s: Session, transition: Transition, job: Job) -> bool:
    where = Job.id == job.id
    return bool(
        {
            "queue": lambda: lifecycle.retry(s, where),
            "claim": lambda: lifecycle.claim(s, job, worker_name="w"),
            "succeed": lambda: lifecycle.succeed(s, job.id, 1.5, None),
            "fail": lambda: lifecycle.fail(s, job.id, "boom"),
            "cancel": lambda: lifecycle.cancel(s, where, error="stop"),
            "requeue": lambda: lifecycle.requeue(s, where, error="worker gone"),
            "kill": lambda: lifecycle.kill(s, job, "no attempts left"),
            "reuse": lambda: lifecycle.reuse(s, job, {"reused_from": "x" * 32, "gpu_seconds": 0.0}),
        }[transition.name]()
    )


@pytest.mark.parametrize("transition", TRANSITIONS, ids=lambda t: t.name)
@pytest.mark.parametrize("source", list(JobStatus))
def test_every_transition_from_every_status(
    sessions: sessionmaker[Session], transition: Transition, source: JobStatus
) -> None:
    # given
    with sessions() as s, s.begin():
        job = _job(s, source)
    # when
    with sessions() as s, s.begin():
        job = s.get(Job, job.id)
        moved = _apply(s, transition, job)
    # then
    with sessions() as s:
        after = s.scalar(select(Job.status).where(Job.id == job.id))
    legal = source in transition.sources
    assert moved is legal
    assert after == (transition.target if legal else source)
    assert isinstance(after, JobStatus)  # Mapped[JobStatus]: read back as the enum


def test_final_statuses_are_never_left_except_by_retry() -> None:
    final = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.DEAD}
    leaving = {t.name for t in TRANSITIONS if t.sources & final}
    assert leaving == {"queue"} and lifecycle.QUEUE.sources == {JobStatus.FAILED, JobStatus.DEAD}


def test_claim_is_a_compare_and_set_on_attempts(sessions: sessionmaker[Session]) -> None:
    # given: two deliveries that read the same row
    with sessions() as s, s.begin():
        job_id = _job(s, JobStatus.QUEUED).id
    with sessions() as a, sessions() as b:
        first, second = a.get(Job, job_id), b.get(Job, job_id)
        # when: both claim
        won_a = lifecycle.claim(a, first, worker_name="a")
        a.commit()
        won_b = lifecycle.claim(b, second, worker_name="b")
        b.commit()
    # then: one wins
    with sessions() as s:
        row = s.get(Job, job_id)
    assert (won_a, won_b) == (True, False)
    assert (row.status, row.worker_name, row.attempts) == (JobStatus.RUNNING, "a", 1)


STATUS_WRITES = re.compile(
    r"\.status\s*=[^=]|values\([^)]*\bstatus=|[\"']status[\"']\s*:\s*JobStatus|\bJob\([^)]*\bstatus=|status=JobStatus"
)


def test_no_code_outside_the_lifecycle_module_writes_a_jobs_status() -> None:
    offenders = []
    for package in ("api", "worker", "control", "models", "core", "broker_config", "zfarm", "migrations"):
        for path in (REPO / package).rglob("*.py"):
            if path == REPO / "models" / "lifecycle.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if STATUS_WRITES.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
