"""`zfarm jobs`, `zfarm batches`, `zfarm cancel` and the human-readable `zfarm status`. httpx only (zfarm.client).

Every id may be given whole or as a unique prefix (the progress bars print 8 characters); the farm resolves it.
"""

from __future__ import annotations

import json
from typing import Any

import click

from zfarm.cli.client_commands import _client, key_option, url_option
from zfarm.client import Batch, Client, Job, ZfarmError

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled", "dead")
BATCH_STATUSES = ("active", "succeeded", "failed", "canceled")


def _when(stamp: str | None) -> str:
    return (stamp or "-")[:19].replace("T", " ")


def _clip(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def job_line(job: Job) -> str:
    p = job["parameters"]
    note = job.get("waiting_for") or job.get("error") or ""
    return (
        f"{job['id'][:8]}  {job['status']:<9} {_when(job['created_at'])}  {p['width']}x{p['height']:<5} "
        f"{_clip(p['prompt'], 48):<48}  {_clip(note, 60)}"
    ).rstrip()


def batch_line(batch: Batch) -> str:
    return (
        f"{batch['id'][:8]}  {batch['status']:<9} {_when(batch['created_at'])}  "
        f"{batch['done']:>6}/{batch['rows']:<6} {batch['progress'] * 100:5.1f}%  {_clip(batch['name'], 40)}"
    )


@click.command()
@click.option("--status", type=click.Choice(JOB_STATUSES), default=None, help="Only jobs in this state.")
@click.option("--limit", "-n", type=click.IntRange(1, 500), default=20, show_default=True, help="How many.")
@url_option
@key_option
def jobs(status: str | None, limit: int, url: str | None, api_key: str | None) -> None:
    """List recent jobs, newest first: id, status, created, size, prompt, and why a job waits or failed."""
    with _client(url, api_key) as client:
        try:
            found = client.jobs(status=status, limit=limit)
        except ZfarmError as exc:
            raise click.ClickException(str(exc)) from exc
    for job in found:
        click.echo(job_line(job))
    if not found:
        click.echo("no jobs" + (f" with status {status}" if status else ""), err=True)


@click.command()
@click.option("--status", type=click.Choice(BATCH_STATUSES), default=None, help="Only batches in this state.")
@click.option("--limit", "-n", type=click.IntRange(1, 200), default=20, show_default=True, help="How many.")
@url_option
@key_option
def batches(status: str | None, limit: int, url: str | None, api_key: str | None) -> None:
    """List recent batches, newest first: id, status, created, done/rows, progress, name."""
    with _client(url, api_key) as client:
        try:
            found = client.batches(limit=limit, status=status)
        except ZfarmError as exc:
            raise click.ClickException(str(exc)) from exc
    for batch in found:
        click.echo(batch_line(batch))
    if not found:
        click.echo("no batches" + (f" with status {status}" if status else ""), err=True)


def _job_or_batch(client: Client, some_id: str) -> tuple[str, Any]:
    """('job', record) or ('batch', record) for an id or a unique prefix of either."""
    try:
        return "job", client.get(some_id)
    except ZfarmError as exc:
        if exc.status_code != 404:
            raise
    return "batch", client.get_batch(some_id)


@click.command()
@click.argument("job_or_batch_id")
@url_option
@key_option
def cancel(job_or_batch_id: str, url: str | None, api_key: str | None) -> None:
    """Cancel a job (a running one stops at its next step), or every job of a batch that has not started."""
    with _client(url, api_key) as client:
        try:
            kind, record = _job_or_batch(client, job_or_batch_id)
            if kind == "job":
                job = client.cancel(record["id"])
                ending = "canceled" if job["status"] == "canceled" else "asked to stop at its next step"
                click.echo(f"job {job['id']} {ending}")
            else:
                batch = client.cancel_batch(record["id"])
                c = batch["counts"]
                click.echo(
                    f"batch {batch['id']} canceled: {c['canceled']} job(s) canceled, {c['running']} running "
                    f"finish, {c['succeeded']} succeeded"
                )
        except ZfarmError as exc:
            raise click.ClickException(str(exc)) from exc


def describe_job(job: Job) -> list[str]:
    p = job["parameters"]
    progress = job["progress"]
    batch = f"  (batch {job['batch_id']}, key {job['item_key']})" if job.get("batch_id") else ""
    running = job["status"] == "running" and progress["step"] is not None
    step = f"  {progress['phase']} {progress['step']}/{progress['total']}" if running else ""
    lines = [f"job      {job['id']}{batch}", f"status   {job['status']}{step}", f"prompt   {p['prompt']}"]
    if p.get("negative_prompt"):
        lines.append(f"negative {p['negative_prompt']}")
    lines.append(
        f"render   {p['width']}x{p['height']} {p['output_format']}, {p['steps']} steps, guidance "
        f"{p['guidance_scale']}, seeds {', '.join(str(s) for s in job['seeds'])}"
    )
    if job.get("waiting_for"):
        lines.append(f"waiting  for {job['waiting_for']}")
    if job.get("error"):
        lines.append(f"error    {job['error']}")
    if job.get("recovery"):
        lines.append(f"recovery {job['recovery']}")
    if job.get("worker_name"):
        lines.append(
            f"worker   {job['worker_name']} on {job['device_name']} ({job['memory_policy']}), "
            f"GPU {job['gpu_seconds'] or 0:.2f} s, queued {job['queued_seconds'] or 0:.2f} s, "
            f"attempts {job['attempts']}"
        )
    if job.get("model_id"):
        noise = "  TEST MODEL: the images are noise" if job.get("test_model_noise") else ""
        lines.append(f"model    {job['model_id']} {job.get('model_revision') or ''}{noise}".rstrip())
    for image in job["images"]:
        extra = "".join(f", {r['name']} {r['width']}x{r['height']}" for r in image.get("renditions", []))
        lines.append(f"image {image['index']}  seed {image['seed']}  {image['sha256'][:16]}…  {image['url']}{extra}")
    return lines


def describe_batch(batch: Batch) -> list[str]:
    counts = ", ".join(f"{n} {status}" for status, n in batch["counts"].items() if n)
    eta = f", about {batch['eta_seconds']:.0f} s left" if batch.get("eta_seconds") else ""
    return [
        f"batch    {batch['id']}  {batch['name']}",
        f"status   {batch['status']}: {batch['done']}/{batch['rows']} done ({batch['progress'] * 100:.1f}%){eta}",
        f"jobs     {counts or 'none'}; {batch['images_done']} image(s), {batch['jobs_reused']} reused, "
        f"{batch['gpu_seconds']:.1f} GPU s",
        f"template {batch['template']}",
        f"manifest {batch['manifest_url']}",
    ]


@click.command()
@click.argument("job_or_batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print the raw record (JSON) instead of a summary.")
@url_option
@key_option
def status(job_or_batch_id: str, as_json: bool, url: str | None, api_key: str | None) -> None:
    """Show a job's or a batch's record: a summary, or the raw JSON with --json."""
    with _client(url, api_key) as client:
        try:
            kind, record = _job_or_batch(client, job_or_batch_id)
        except ZfarmError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        return
    for line in describe_job(record) if kind == "job" else describe_batch(record):
        click.echo(line)
