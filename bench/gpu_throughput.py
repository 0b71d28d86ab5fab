"""Throughput of the whole farm on one GPU, beside plain diffusers in the same run.

One command: builds the full-size Z-Image-Turbo shapes with random weights (same FLOPs and memory as the
checkpoint; every image is noise), saves them with `save_pretrained`, starts the farm on them the way `zfarm up`
does (embedded Redis, SQLite, API, one worker per GPU, Flower) through the real loading path, and submits jobs
over HTTP. Measures images/s from the first submit to the last image stored, job latency, cold start, peak VRAM
(reported by the worker per pipeline call), the farm's overhead over the sum of GPU time, and compiled graphs
(flat in steady state); then other sizes, latency on an idle farm, and each memory policy. Optionally runs the
plain-diffusers anchor (`zimage_anchor.py`) first, on the same GPU, for the ratio. Writes JSON and appends a
table to BENCHMARKS.md.

    python -m bench.gpu_throughput --anchor ../shared/bench/zimage_anchor.py          # on a GPU machine
    python -m bench.gpu_throughput --tiny --jobs 4 --sizes 256x256 --steps 2            # CPU smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench.adapters import adapter_phases, table_rows
from bench.prompts import prompt
from core.settings import FarmSettings
from zfarm.cli.client_commands import parse_renditions
from zfarm.client import Client
from zfarm.launcher.embedded import Farm, open_on_loopback
from zfarm.launcher.gpus import visible_gpus
from zfarm.launcher.redis_server import free_port

REPO = Path(__file__).resolve().parents[1]
FINAL = {"succeeded", "failed", "canceled", "dead"}
STATS_TAG = "zfarm-stats "


# ---- the farm ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_farm(
    data_dir: Path,
    model: str,
    policy: str,
    device: str,
    extra_env: dict[str, str],
    ready_timeout: float,
    logs: str = "logs",
) -> Iterator[tuple[Farm, Client, dict[str, Any]]]:
    """A farm as `zfarm up` starts it; yields it with a client and its cold-start record once a worker is ready."""
    for key in [k for k in os.environ if k.startswith("ZFARM_")]:
        del os.environ[key]  # only what this run sets reaches the children
    os.environ.update({"ZFARM_DEVICE": device, **extra_env})
    settings = FarmSettings(
        data_dir=data_dir,
        model=model,
        memory_policy=policy,  # type: ignore[arg-type]
        device=device,  # type: ignore[arg-type]
        api_port=free_port(),
        flower_port=free_port(),
    )
    farm = Farm(open_on_loopback(settings), log_dir=data_dir / logs)  # as `zfarm up`: open on 127.0.0.1 only
    started = time.time()
    try:
        farm.start()
        with Client(farm.api_url, timeout=60) as client:
            cold = _wait_ready(farm, client, started, ready_timeout)
            yield farm, client, cold
    finally:
        farm.stop()


def _wait_ready(farm: Farm, client: Client, started: float, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in farm.children:
            if child.proc.poll() is not None and child.name != "flower":  # the monitor is not measured: no stop
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode} during start-up")
        failed = _start_failure(farm)
        if failed:
            raise RuntimeError(f"worker start-up failed: {failed}")
        with contextlib.suppress(httpx.HTTPError):
            ready = [w for w in client.workers() if w["state"] == "ready"]
            if ready:
                w = ready[0]
                return {
                    "cold_start_s": round(time.time() - started, 2),
                    "load_s": w["load_seconds"],
                    "warmup_s": w["warmup_seconds"],
                    "worker": w["name"],
                    "gpu": w["gpu_name"],
                    "policy": w["memory_policy"],
                }
        time.sleep(0.5)
    raise TimeoutError(f"no worker ready after {timeout:.0f}s")


def _start_failure(farm: Farm) -> str | None:
    # Celery logs an exception in the child's start-up hook and keeps the process: stop waiting at once.
    for path in sorted((farm.log_dir or Path(".")).glob("gpu*.log")) + sorted(
        (farm.log_dir or Path(".")).glob("cpu*.log")
    ):
        text = path.read_text(errors="replace")
        if "Signal handler <function _start_child" in text:
            return text[text.index("Signal handler <function _start_child") :][:3000]
    return None


def worker_stats(farm: Farm) -> list[dict[str, Any]]:
    """The worker's `zfarm-stats` log lines: one at ready, one per pipeline call."""
    lines = []
    log_dir = farm.log_dir or Path(".")
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if STATS_TAG in line:
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(line.split(STATS_TAG, 1)[1]))
    return lines


# ---- one phase: submit, wait, measure --------------------------------------------------------------------


def run_jobs(
    client: Client,
    n: int,
    width: int,
    height: int,
    steps: int,
    first: int,
    timeout: float,
    renditions: list[dict[str, Any]] | None = None,
    loras: Callable[[int], list[dict[str, Any]]] | None = None,
    precision: str = "bf16",
) -> dict:
    """Submits n jobs at once (distinct prompts and seeds), waits for all, returns the figures. `loras(i)`: the
    LoRA adapters of job i."""
    t0 = datetime.now(UTC)
    params: dict[str, Any] = {"width": width, "height": height, "steps": steps, "guidance_scale": 0.0}
    if precision != "bf16":
        params["precision"] = precision
    if renditions:
        params["renditions"] = renditions
    ids = []
    for i in range(n):
        styled = {"loras": loras(i)} if loras else {}
        ids.append(client.submit(prompt(first + i), seed=first + i, **params, **styled)["id"])
    submitted = (datetime.now(UTC) - t0).total_seconds()
    jobs = _wait_all(client, ids, timeout)
    size = f"{width}x{height}"
    if renditions:
        size += " + " + ", ".join(f"{r['width']}x{r['height']} {r.get('format', 'webp')}" for r in renditions)
    figures = _figures(jobs, t0, submitted, size + ("" if precision == "bf16" else f" {precision}"), steps)
    if renditions:
        made = [r for j in jobs for im in j["images"] for r in im.get("renditions", [])]
        figures["renditions_made"] = len(made)
    return figures


def run_idle(client: Client, n: int, size: int, steps: int, first: int, timeout: float) -> dict:
    """One job at a time on an idle farm: latency against the GPU time of that job."""
    records = []
    for i in range(n):
        job = client.submit(prompt(first + i), width=size, height=size, steps=steps, guidance_scale=0.0, seed=first + i)
        records.append(client.wait(job["id"], timeout=timeout, poll=0.05))
    ok = [j for j in records if j["status"] == "succeeded"]
    lat = [_seconds(j["finished_at"]) - _seconds(j["created_at"]) for j in ok]
    gpu = [j["gpu_seconds"] for j in ok]
    return {
        "size": f"{size}x{size}",
        "jobs": n,
        "succeeded": len(ok),
        "latency_p50_s": _r(statistics.median(lat)) if lat else None,
        "gpu_p50_s": _r(statistics.median(gpu)) if gpu else None,
        "latency_over_gpu": _r(statistics.median(lat) / statistics.median(gpu)) if gpu else None,
    }


def _wait_all(client: Client, ids: list[str], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    pending, done = set(ids), {}
    while pending and time.monotonic() < deadline:
        # One list request a round (phases hold at most 500 jobs), not one request per job.
        for job in client.http.get("/v1/jobs", params={"limit": 500}).json()["jobs"]:
            if job["id"] in pending and job["status"] in FINAL:
                pending.discard(job["id"])
                done[job["id"]] = job
        time.sleep(0.25)
    if pending:
        raise TimeoutError(f"{len(pending)} of {len(ids)} jobs unfinished after {timeout:.0f}s")
    return [done[i] for i in ids]


def _figures(jobs: list[dict], t0: datetime, submit_s: float, size: str, steps: int) -> dict:
    ok = [j for j in jobs if j["status"] == "succeeded"]
    images = sum(len(j["images"]) for j in ok)
    start = t0.timestamp()
    wall = max(_seconds(j["finished_at"]) for j in jobs) - start
    lat = sorted(_seconds(j["finished_at"]) - _seconds(j["created_at"]) for j in ok)
    gpu = sum(j["gpu_seconds"] or 0.0 for j in ok)
    return {
        "size": size,
        "steps": steps,
        "jobs": len(jobs),
        "succeeded": len(ok),
        "errors": sorted({j["error"] for j in jobs if j["error"]})[:3],
        "images": images,
        "submit_s": _r(submit_s),
        "wall_s": _r(wall),
        "img_per_s": _r(images / wall) if wall > 0 else None,
        "latency_p50_s": _r(statistics.median(lat)) if lat else None,
        "latency_p95_s": _r(lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]) if lat else None,
        "gpu_seconds_sum": _r(gpu),
        "gpu_s_per_image": _r(gpu / images) if images else None,
        "overhead": _r(wall / gpu - 1) if gpu else None,
        "device": ok[0]["device_name"] if ok else None,
        "versions": ok[0]["versions"] if ok else None,
    }


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _r(x: float) -> float:
    return round(float(x), 4)


# ---- the stages ------------------------------------------------------------------------------------------


def stage_model(a: argparse.Namespace) -> tuple[str, dict]:
    if a.tiny:
        return "tiny", {"model": "tiny (random test model, noise)"}
    cmd = [sys.executable, "-m", "bench.full_model", "--out", str(a.model_dir)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.full_model exited {proc.returncode}: {proc.stderr[-800:]}")
    return str(a.model_dir), json.loads(proc.stdout.strip().splitlines()[-1])


def stage_anchor(a: argparse.Namespace) -> list[dict]:
    out = a.workdir / "anchor.json"
    cmd = [sys.executable, str(a.anchor), "--cases", a.anchor_cases, "--out", str(out)] + (["--tiny"] if a.tiny else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.anchor_timeout)
    (a.workdir / "anchor.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"anchor exited {proc.returncode}: {proc.stderr[-500:]}")
    return json.loads(out.read_text())


def stage_farm(a: argparse.Namespace, model: str, result: dict) -> None:
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    env = {"ZFARM_WARMUP_SIZE": str(sizes[0][0]), **dict(kv.split("=", 1) for kv in a.env)}
    if a.loras and a.lora_rank > 64:  # the slot must hold the benchmark's adapter (64 is the farm's default)
        env.setdefault("ZFARM_LORA_SLOT_RANK", str(a.lora_rank))
    data = a.workdir / "farm-full"
    with running_farm(data, model, a.policy, a.device, env, a.ready_timeout) as (farm, client, cold):
        result["cold_start"] = cold
        _save(a, result)
        base = 0
        for i, (w, h) in enumerate(sizes):
            n = a.jobs if i == 0 else a.size_jobs
            result.setdefault("phases", []).append(run_jobs(client, n, w, h, a.steps, base, a.phase_timeout))
            base += n
            _save(a, result)
        if a.renditions:
            # The first size again with renditions on every job: made on the worker's CPU beside the next render.
            w, h = sizes[0]
            specs = parse_renditions(tuple(a.renditions.split(",")))
            phase = run_jobs(client, a.jobs, w, h, a.steps, base, a.phase_timeout, renditions=specs)
            result.setdefault("phases", []).append(phase)
            base += a.jobs
            _save(a, result)
        if a.idle_jobs:
            result["idle"] = run_idle(client, a.idle_jobs, sizes[0][0], a.steps, base, a.phase_timeout)
        if a.loras:
            result["adapters"] = stage_adapters(a, client, farm, sizes[0])
            _save(a, result)
        time.sleep(1.0)  # the last finishing thread logs before we read
        result["worker_stats"] = summarize_stats(worker_stats(farm), a.jobs)


def stage_adapters(a: argparse.Namespace, client: Client, farm: Farm, size: tuple[int, int]) -> dict:
    """LoRA adapters on the same farm (bench/adapters.py): one adapter against none, switches between jobs."""
    try:
        jobs = partial(run_jobs, client, steps=a.steps, timeout=a.phase_timeout)
        kind = "tiny" if a.tiny else "z-image"
        return adapter_phases(client, jobs, lambda: worker_stats(farm), a.workdir, kind, a.lora_rank, a.loras, size)
    except Exception as exc:  # the other figures of the run stand without these
        return {"error": f"{type(exc).__name__}: {exc}"[:1000]}


def stage_fp8(a: argparse.Namespace, model: str, result: dict, tier: str = "fp8") -> None:
    """The FP8 tier (jobs asking precision fp8, compatible ones batched), started twice on one data dir: the second
    start reads the compile cache the first one wrote (DATA_DIR/compile-cache)."""
    w, h = (int(v) for v in a.sizes.split(",")[0].split("x"))
    env = {
        "ZFARM_WARMUP_SIZE": str(w),
        "ZFARM_PRECISION": tier,
        "ZFARM_BATCH_MAX_IMAGES": str(a.fp8_batch),
        **dict(kv.split("=", 1) for kv in a.env),
    }
    data = a.workdir / "farm-fp8"
    for start, n, first in (("first", a.fp8_jobs, 20000), ("second", a.fp8_restart_jobs, 30000)):
        if n <= 0:
            continue
        entry: dict[str, Any] = {"start": start}
        result.setdefault("fp8", []).append(entry)
        with running_farm(data, model, a.policy, a.device, env, a.ready_timeout, logs=f"logs-{start}") as (
            farm,
            client,
            cold,
        ):
            entry["cold_start"] = cold
            _save(a, result)
            entry.update(run_jobs(client, n, w, h, a.steps, first, a.phase_timeout, precision=tier))
            time.sleep(1.0)
            entry["worker_stats"] = summarize_stats(worker_stats(farm), n)
        _save(a, result)


def stage_ladder(a: argparse.Namespace, model: str) -> dict:
    out = a.workdir / "ladder.json"
    cmd = [sys.executable, "-m", "bench.lever_ladder", "--model", model, "--steps", str(a.steps), "--out", str(out)]
    if a.tiny:
        cmd += ["--size", "256", "--reps", "1"]
    # Straight to a file, not through a pipe: what it printed survives a time limit that stops it midway.
    with (a.workdir / "ladder.log").open("w") as log:
        proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=a.phase_timeout)
    if proc.returncode != 0:
        partial = json.loads(out.read_text()) if out.is_file() else {}
        raise RuntimeError(f"lever_ladder exited {proc.returncode} (see ladder.log; partial: {partial})")
    return json.loads(out.read_text())


def summarize_stats(lines: list[dict], first_phase_jobs: int) -> dict:
    ready = next((x for x in lines if x.get("ready")), {})
    calls = [x for x in lines if not x.get("ready")]
    jobs, after10 = 0, None
    for x in calls:
        jobs += x["jobs"]
        if after10 is None and jobs >= 10:
            after10 = x
    # Per pipeline call (the worker resets the peak before each call); absent on a CPU.
    peaks = [x["max_allocated_mib"] for x in calls if "max_allocated_mib" in x]
    solo = [x["max_allocated_mib"] for x in calls if x["images"] == 1 and "max_allocated_mib" in x]
    return {
        "compiled": ready.get("compiled"),
        "compile_error": ready.get("compile_error"),
        "graphs_at_ready": ready.get("graphs"),
        "graphs_at_end": calls[-1]["graphs"] if calls else None,
        "pipeline_calls": len(calls),
        "jobs_per_call_mean": _r(jobs / len(calls)) if calls else None,
        "peak_allocated_mib": max(peaks, default=None),
        "peak_allocated_batch1_mib": max(solo, default=None),
        "peak_reserved_mib": max((x["max_reserved_mib"] for x in calls if "max_reserved_mib" in x), default=None),
        "reserved_after_10_jobs_mib": after10.get("reserved_mib") if after10 else None,
        "reserved_at_end_mib": calls[-1].get("reserved_mib") if calls else None,
        "jobs_at_end": jobs,
    }


def stage_levers(a: argparse.Namespace, model: str) -> dict:
    cmd = [sys.executable, "-m", "bench.levers", "--model", model, "--steps", str(a.steps)]
    if a.tiny:
        cmd += ["--size", "256", "--reps", "1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=a.phase_timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"levers exited {proc.returncode}: {proc.stderr[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stage_policies(a: argparse.Namespace, model: str, result: dict) -> None:
    size = int(a.policy_size)
    for spec in a.policies.split(","):
        policy, _, count = spec.partition("=")
        n = int(count or 1)
        entry: dict[str, Any] = {"policy": policy}
        result.setdefault("policies", []).append(entry)
        try:
            env = {"ZFARM_WARMUP": "false", **dict(kv.split("=", 1) for kv in a.env)}
            with running_farm(a.workdir / f"farm-{policy}", model, policy, a.device, env, a.ready_timeout) as (
                farm,
                client,
                cold,
            ):
                entry["cold_start"] = cold
                entry.update(run_jobs(client, n, size, size, a.steps, 5000, a.phase_timeout))
                time.sleep(1.0)
                entry["worker_stats"] = summarize_stats(worker_stats(farm), n)
        except Exception as exc:  # one policy failing must not lose the others' figures
            entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
        _save(a, result)


# ---- output ----------------------------------------------------------------------------------------------


def _save(a: argparse.Namespace, result: dict) -> None:
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1, default=str))


def table(result: dict) -> str:
    noise = "full-size shapes with random weights (same FLOPs as the checkpoint; images are noise)"
    if result.get("tiny"):
        noise = "the tiny random test model on a CPU (a smoke run: these numbers say nothing about a GPU)"
    rows = ["| measurement | value |", "|---|---|"]
    anchor = {r["case"]: r for r in result.get("anchor", []) if "case" in r}
    plain = anchor.get("plain bs1")
    for ph in result.get("phases", []):
        line = (
            f"{ph['img_per_s']} img/s ({ph['succeeded']}/{ph['jobs']} jobs, wall {ph['wall_s']} s, GPU "
            f"{ph['gpu_s_per_image']} s/img, overhead {_pct(ph['overhead'])}, latency p50/p95 "
            f"{ph['latency_p50_s']}/{ph['latency_p95_s']} s)"
        )
        rows.append(f"| farm {ph['size']} x{ph['steps']} steps | {line} |")
    if plain and result.get("phases"):
        main = result["phases"][0]
        ratio = main["img_per_s"] / plain["img_per_s"] if main["img_per_s"] else 0
        rows.append(f"| plain diffusers {plain['size']} bs1 (same run) | {plain['img_per_s']} img/s |")
        rows.append(f"| farm / plain | {ratio:.2f}x |")
    for r in result.get("anchor", []):
        if "case" in r and r is not plain and "img_per_s" in r:
            rows.append(
                f"| plain: {r['case']} {r.get('size', '')} | {r['img_per_s']} img/s, peak {r['peak_gib']} GiB |"
            )
    if "idle" in result:
        i = result["idle"]
        rows.append(
            f"| idle farm, one job at a time ({i['size']}) | latency p50 {i['latency_p50_s']} s, GPU p50 "
            f"{i['gpu_p50_s']} s, ratio {i['latency_over_gpu']} |"
        )
    if "adapters" in result:
        rows.extend(table_rows(result["adapters"]))
    if "cold_start" in result:
        c = result["cold_start"]
        took = f"{c['cold_start_s']} s (load {_r(c['load_s'])} s, warmup {_r(c['warmup_s'])} s)"
        rows.append(f"| cold start (process start -> ready) | {took} |")
    ws = result.get("worker_stats", {})
    if ws:
        rows.append(
            f"| compiled graphs at ready / at end | {ws['graphs_at_ready']} / {ws['graphs_at_end']} "
            f"(compiled={ws['compiled']}{', error ' + str(ws['compile_error']) if ws['compile_error'] else ''}) |"
        )
        rows.append(
            f"| peak VRAM allocated: any call / batch-1 calls | {_gib(ws['peak_allocated_mib'])} / "
            f"{_gib(ws['peak_allocated_batch1_mib'])} GiB (reserved peak {_gib(ws['peak_reserved_mib'])} GiB) |"
        )
        rows.append(
            f"| reserved VRAM after 10 jobs / after {ws['jobs_at_end']} jobs | "
            f"{_gib(ws['reserved_after_10_jobs_mib'])} / {_gib(ws['reserved_at_end_mib'])} GiB |"
        )
        rows.append(f"| jobs per pipeline call (batching) | {ws['jobs_per_call_mean']} |")
    for p in result.get("policies", []):
        if "error" in p:
            rows.append(f"| policy {p['policy']} | error: {p['error'][:200]} |")
        else:
            ws = p.get("worker_stats", {})
            rows.append(
                f"| policy {p['policy']} ({p['size']}, {p['jobs']} jobs, cold) | {p['img_per_s']} img/s, "
                f"peak allocated {_gib(ws.get('peak_allocated_mib'))} GiB |"
            )
    for e in result.get("fp8", []):
        c, ws = e.get("cold_start", {}), e.get("worker_stats", {})
        rows.append(
            f"| fp8 farm, {e['start']} start: {e.get('size', '')} | {e.get('img_per_s')} img/s "
            f"({e.get('succeeded')}/{e.get('jobs')} jobs, GPU {e.get('gpu_s_per_image')} s/img, "
            f"{ws.get('jobs_per_call_mean')} jobs per call, graphs {ws.get('graphs_at_ready')} -> "
            f"{ws.get('graphs_at_end')}); start {c.get('cold_start_s')} s (load {c.get('load_s')}, warmup "
            f"{c.get('warmup_s')}) |"
        )
    if plain and result.get("fp8") and result["fp8"][0].get("img_per_s"):
        rows.append(f"| fp8 farm / plain | {result['fp8'][0]['img_per_s'] / plain['img_per_s']:.2f}x |")
    if "ladder" in result:
        rows.append(f"| lever ladder (bench.lever_ladder) | {json.dumps(result['ladder'])} |")
    if "levers" in result:
        rows.append(f"| levers, eager batch 1 (bench.levers) | {json.dumps(result['levers'])} |")
    if "model" in result:
        rows.append(f"| model build / save_pretrained | {json.dumps(result['model'])} |")
    for name, err in result.get("errors", {}).items():
        rows.append(f"| stage {name} failed | {err[:300]} |")
    return f"All figures: {noise}.\n\n" + "\n".join(rows)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _gib(mib: float | None) -> str:
    return "n/a" if mib is None else f"{mib / 1024:.2f}"


def append_markdown(path: Path, result: dict, command: str) -> None:
    v = result.get("environment", {})
    head = (
        f"\n### {result['started']} on {v.get('gpu')}\n\n"
        f"torch {v.get('torch')} (CUDA {v.get('cuda')}), diffusers {v.get('diffusers')}, "
        f"transformers {v.get('transformers')}, Python {v.get('python')}; driver {v.get('driver')}.\n\n"
        f"Command: `{command}`\n\n"
    )
    with path.open("a") as fh:
        fh.write(head + table(result) + "\n")


def environment() -> dict[str, Any]:
    import diffusers
    import torch
    import transformers

    gpus = visible_gpus()
    driver = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.strip()
    return {
        "gpu": gpus[0].name if gpus else f"cpu ({platform.machine()})",
        "gpus": len(gpus),
        "driver": driver,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="the tiny test model on the CPU (smoke run)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/zfarm-bench"))
    ap.add_argument("--model-dir", type=Path, default=None, help="default WORKDIR/zimage-full-random")
    ap.add_argument("--jobs", type=int, default=64, help="jobs in the main phase (first size)")
    ap.add_argument("--size-jobs", type=int, default=16, help="jobs for each further size")
    ap.add_argument("--sizes", default="1024x1024,512x512,768x1024", help="WIDTHxHEIGHT, the first is the main")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--idle-jobs", type=int, default=5)
    ap.add_argument(
        "--renditions", default="", help="e.g. thumb=512x512:webp:85: a phase at the first size with these renditions"
    )
    ap.add_argument("--loras", type=int, default=0, help="jobs per LoRA phase (none, one, alternating); 0: skip")
    ap.add_argument("--lora-rank", type=int, default=64, help="rank of the random adapters of the LoRA phases")
    ap.add_argument("--policy", default="full", help="memory policy of the main farm")
    ap.add_argument("--levers", action="store_true", help="also time single levers in-process (bench.levers)")
    ap.add_argument("--ladder", action="store_true", help="issue 15's levers in-process (bench.lever_ladder)")
    ap.add_argument("--skip-farm", action="store_true", help="no bf16 farm stage (e.g. an fp8-only run)")
    ap.add_argument("--fp8-jobs", type=int, default=0, help="jobs for a farm run with ZFARM_PRECISION=fp8 (0: none)")
    ap.add_argument("--fp8-restart-jobs", type=int, default=0, help="jobs after restarting that farm (compile cache)")
    ap.add_argument("--fp8-batch", type=int, default=4, help="ZFARM_BATCH_MAX_IMAGES of the fp8 farm")
    ap.add_argument("--policies", default="", help="e.g. model-offload=3,sequential-offload=1 (jobs each)")
    ap.add_argument("--policy-size", default="512")
    ap.add_argument("--env", action="append", default=[], help="ZFARM_X=value for the workers (repeatable)")
    ap.add_argument("--anchor", type=Path, default=None, help="path of zimage_anchor.py to run first")
    ap.add_argument("--anchor-cases", default="base")
    ap.add_argument("--anchor-timeout", type=float, default=300)
    ap.add_argument("--ready-timeout", type=float, default=600)
    ap.add_argument("--phase-timeout", type=float, default=600)
    ap.add_argument("--out", type=Path, default=None, help="JSON result (default WORKDIR/gpu_throughput.json)")
    ap.add_argument("--benchmarks-md", type=Path, default=None, help="append the table to this file")
    a = ap.parse_args(argv)
    a.device = "cpu" if a.tiny else "auto"
    a.model_dir = a.model_dir or a.workdir / "zimage-full-random"
    a.out = a.out or a.workdir / "gpu_throughput.json"
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    a.workdir.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.gpu_throughput " + shlex.join(argv if argv is not None else sys.argv[1:])
    result: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "command": command}
    result["environment"], result["tiny"] = environment(), a.tiny
    model = "tiny"
    for name in ("model", "anchor", "farm", "fp8", "ladder", "levers", "policies"):
        t = time.perf_counter()
        try:
            if name == "model":
                model, result["model"] = stage_model(a)
            elif name == "anchor" and a.anchor:
                result["anchor"] = stage_anchor(a)
            elif name == "farm" and not a.skip_farm:
                stage_farm(a, model, result)
            elif name == "fp8" and (a.fp8_jobs or a.fp8_restart_jobs):
                stage_fp8(a, model, result)
            elif name == "ladder" and a.ladder:
                result["ladder"] = stage_ladder(a, model)
            elif name == "levers" and a.levers:
                result["levers"] = stage_levers(a, model)
            elif name == "policies" and a.policies:
                stage_policies(a, model, result)
        except Exception as exc:  # later stages still run; the table says what failed
            result.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:1000]
            if name == "model":
                break  # without the full-size model every later figure would be the tiny model's: measure nothing
        except KeyboardInterrupt:  # the time limit (SIGINT): keep what was measured, skip the rest
            result.setdefault("errors", {})[name] = "interrupted (time limit)"
            break
        finally:
            result.setdefault("stage_seconds", {})[name] = _r(time.perf_counter() - t)
            _save(a, result)
            print(f"stage {name}: {result['stage_seconds'][name]} s", flush=True)
    if a.benchmarks_md:
        append_markdown(a.benchmarks_md, result, command)
    print(table(result), flush=True)
    return 1 if result.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
