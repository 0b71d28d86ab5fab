"""The worker's parent process (Celery's, which forks the renderer) must not import the rendering stack."""

from __future__ import annotations

import subprocess
import sys


def test_registering_the_tasks_imports_no_torch_diffusers_transformers_or_torchao() -> None:
    # Some of that stack initialises CUDA on import on a GPU machine (transformers imports torchao, whose kernels
    # library does), and a parent that touched CUDA forks a child that cannot use it. Measured on an H200.
    code = (
        "import sys, worker.tasks, worker.fp8_support\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'transformers', 'torchao'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
