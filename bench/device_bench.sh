#!/usr/bin/env bash
# The GPU benchmark as run on the lent H200 (no network): offline install from .wheels, then
# `python -m bench.gpu_throughput` with the arguments given; logs, JSON and the table land in $OUT.
#
#     OUT=/tmp/out bash bench/device_bench.sh --anchor bench/zimage_anchor.py --anchor-cases base
set -uo pipefail
OUT="${OUT:-/tmp/zfarm-bench-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ! bash bench/device_setup.sh >"$OUT/setup.log" 2>&1; then
    tail -40 "$OUT/setup.log"
    exit 1
fi
tail -9 "$OUT/setup.log"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader
df -h /tmp | tail -1
if [ "${ZFARM_FORK_CHECK:-0}" = 1 ]; then
    # Which import, if any, initialises CUDA in a process that later forks (the Celery worker's parent)?
    python3 - <<'PY' 2>&1 | grep -v Warning | tee "$OUT/fork_check.log"
import importlib, os
def poisoned():
    pid = os.fork()
    if pid == 0:
        import torch
        os._exit(3 if torch.cuda._is_in_bad_fork() else 0)
    return os.waitpid(pid, 0)[1] >> 8 == 3
for mod in ["torch", "diffusers", "transformers", "accelerate", "worker.render", "worker.runtime", "worker.tasks"]:
    importlib.import_module(mod)
    print("fork check after importing", mod, ":", "POISONED" if poisoned() else "clean", flush=True)
PY
fi
WORK="${ZFARM_BENCH_WORKDIR:-/tmp/zfarm-bench}"
# SIGINT before the call's own limit: the benchmark stops its farm and keeps the JSON written so far.
timeout -s INT "${ZFARM_BENCH_LIMIT:-540}" python3 -m bench.gpu_throughput --workdir "$WORK" \
    --out "$OUT/gpu_throughput.json" --benchmarks-md "$OUT/table.md" "$@" 2>&1 | tee "$OUT/bench.log"
code=${PIPESTATUS[0]}
# Worker logs (one folder per farm start), the anchor's and the ladder's logs and the setup log, in one archive:
# the device tool brings back at most 8 files.
LOGS="$(mktemp -d)"
for f in "$WORK"/farm-*/logs*/*.log; do
    [ -f "$f" ] && tail -c 3000000 "$f" >"$LOGS/$(basename "$(dirname "$(dirname "$f")")")-$(basename "$(dirname "$f")")-$(basename "$f")"
done
for f in "$WORK/anchor.log" "$WORK/ladder.log" "$OUT/setup.log"; do [ -f "$f" ] && cp "$f" "$LOGS/"; done
tar -czf "$OUT/logs.tar.gz" -C "$LOGS" . && rm -f "$OUT/setup.log"
exit "$code"
