"""Compatible queued jobs rendered in one pipeline call: the task for one job claims up to K-1 more from SQL.

Compatible means the same width, height, steps and guidance scale (one call, one latent shape, one schedule),
and the same lane and campaign as the leader; prompts, seeds, negative prompts and output formats may differ,
and each image equals its seed rendered alone (per-image generators; prompts of different lengths are padded
with an attention mask inside the DiT). Predicted from anchors.md: +40 % images/s at 512x512, +10 % at
1024x1024; measured in the farm with compiled blocks: +4-5 % at 1024x1024 (BENCHMARKS.md).

Delivery stays at least once: a companion is claimed with the same compare-and-set as its own delivery
(`claim_job`), so it runs in one batch only, and its own message, when it arrives, finds it finished and is
skipped. If this worker dies mid-batch the companions are left `running`: a restarted worker requeues the
jobs left running under its name (`worker/process.py: register`), and the API's reconciler requeues those of a
worker whose heartbeat stopped (`api/reconciler.py: Reconciler.requeue_orphaned`). Only jobs on their first
attempt are batched: after a crash every job of the batch runs alone, so a job that kills its worker reaches
its attempt cap by itself and its former batch-mates succeed.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import Job, JobStatus
from models.lifecycle import Outcome
from worker.render import RenderRequest

Claim = Callable[[str], RenderRequest | Outcome]


def claim_companions(
    leader_id: str, leader: RenderRequest, sessions: sessionmaker[Session], max_images: int, claim: Claim
) -> list[tuple[str, RenderRequest]]:
    """Queued jobs compatible with the leader, oldest first, claimed until the batch holds `max_images`."""
    budget = max_images - leader.num_images
    if budget <= 0:
        return []
    with sessions() as s:
        lane, batch_id, adapters = s.execute(
            select(Job.lane, Job.batch_id, Job.adapters).where(Job.id == leader_id)
        ).one()
        rows = s.execute(
            select(Job.id, Job.num_images)
            .where(
                # The leader's own lane and campaign: an interactive job never waits for bulk rows rendered
                # beside it, and a campaign's turn (api/dispatcher.py) is not spent on another campaign's rows.
                Job.lane == lane,
                Job.batch_id.is_(None) if batch_id is None else Job.batch_id == batch_id,
                # One call renders with one set of LoRA adapters (the slot holds one): never mix styles.
                Job.adapters.is_(None) if adapters is None else Job.adapters == adapters,
                Job.status == JobStatus.QUEUED,
                Job.width == leader.width,
                Job.height == leader.height,
                Job.steps == leader.steps,
                Job.guidance_scale == leader.guidance_scale,
                Job.precision == leader.extra.get("precision", "bf16"),  # this worker's tier (its jobs' too)
                Job.cancel_requested.is_(False),
                Job.attempts == 0,  # only fresh jobs: one retried after a crash runs alone
                Job.mode == "text",  # image jobs render alone (their inputs are their own)
                Job.num_images <= budget,
                Job.id != leader_id,
            )
            .order_by(Job.created_at)
            .limit(2 * budget)
        ).all()
    companions: list[tuple[str, RenderRequest]] = []
    for job_id, num_images in rows:
        if num_images > budget:
            continue
        claimed = claim(job_id)
        if isinstance(claimed, RenderRequest):  # else another worker won it, or it was canceled meanwhile
            companions.append((job_id, claimed))
            budget -= num_images
        if budget == 0:
            break
    return companions


def batch_limit(req: RenderRequest, max_images: int, max_pixels: int) -> int:
    """Images in one call at this size: a pixel budget (16 at 512x512, 4 at 1024x1024 by default), capped."""
    return max(1, min(max_images, max_pixels // (req.width * req.height)))


def split_seconds(seconds: float, reqs: list[RenderRequest]) -> list[float]:
    """A batch's GPU time shared by its jobs in proportion to their images."""
    total = sum(r.num_images for r in reqs)
    return [seconds * r.num_images / total for r in reqs]
