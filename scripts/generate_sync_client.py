"""Generates the sync client from the async one (httpcore's approach, with the `unasync` library).

python scripts/generate_sync_client.py           # writes zfarm/client/_sync/client.py
python scripts/generate_sync_client.py --check   # exits 1 if the checked-in file differs (run by `make test`)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import unasync

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "zfarm/client/_async/client.py"
TARGET = ROOT / "zfarm/client/_sync/client.py"
REPLACEMENTS = {
    "AsyncClient": "Client",
    "AsyncBaseTransport": "BaseTransport",
    "aclose": "close",
    "aread": "read",
    "aiter_lines": "iter_lines",
    "aiter_bytes": "iter_bytes",
    "asyncio": "time",
    "_async": "_sync",
}
HEADER = "# GENERATED from zfarm/client/_async/client.py by scripts/generate_sync_client.py: do not edit.\n"


def generate() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "_async" / "client.py"
        src.parent.mkdir()
        src.write_text(SOURCE.read_text())
        unasync.unasync_files([str(src)], [unasync.Rule("/_async/", "/_sync/", REPLACEMENTS)])
        out = Path(tmp) / "_sync" / "client.py"
        out.write_text(HEADER + out.read_text())
        # The same formatting as the rest of the tree, so the file passes `ruff` as it is.
        ruff = [sys.executable, "-m", "ruff"]
        subprocess.run([*ruff, "check", "--fix", "--select", "I,F401", "-q", str(out)], check=True, cwd=ROOT)
        subprocess.run([*ruff, "format", "-q", str(out)], check=True, cwd=ROOT)
        return out.read_text()


def main() -> int:
    text = generate()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(
                f"{TARGET.relative_to(ROOT)} is out of date: run `make client` (python scripts/generate_sync_client.py)"
            )
            return 1
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
