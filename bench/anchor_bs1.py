"""The plain-diffusers anchor's batch-1 case alone (`zimage_anchor.py`'s own build() and case()), for GPU runs
short on time: the ratio farm / plain needs only this case (~25 s instead of ~50 s for `--cases base`).

`zimage_anchor.py` is `../shared/bench/zimage_anchor.py`, carried to the device beside the repo as
`.device/zimage_anchor.py` (or put next to this file).

usage: python bench/anchor_bs1.py --out anchor.json      (as gpu_throughput's --anchor)
"""

import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path.cwd() / ".device")]
import zimage_anchor as za  # noqa: E402

if __name__ == "__main__":
    out = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "anchor.json"
    pipe = za.build(False, "cuda")
    Path(out).write_text(json.dumps([za.case(pipe, "plain bs1", size=1024)], indent=1))
