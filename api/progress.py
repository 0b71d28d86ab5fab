"""A job's progress as people read it: step of total, a fraction for a bar, and the phase it is in."""

from __future__ import annotations

from api.schemas import JobProgress
from models import Job, JobStatus
from models.statuses import FINAL_STATUSES


def job_progress(job: Job) -> JobProgress:
    total = job.progress_total or job.steps
    step = job.progress_step
    if job.status == JobStatus.SUCCEEDED:
        return JobProgress(step=total, total=total, fraction=1.0, phase="done")
    if job.status in FINAL_STATUSES:
        return JobProgress(step=step, total=total, fraction=min(1.0, (step or 0) / total), phase="done")
    if job.status == JobStatus.QUEUED or step is None:
        phase = "queued" if job.status == JobStatus.QUEUED else "starting"
        return JobProgress(step=None, total=total, fraction=0.0, phase=phase)
    # After the last step the worker decodes the latents and stores the images.
    return JobProgress(
        step=step, total=total, fraction=min(1.0, step / total), phase="finishing" if step >= total else "denoising"
    )
