"""Running a test function in two gloo processes (Accelerate's debug launcher) from a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def launch_two_processes(module: str, function: str, out_dir: Path) -> None:
    """Run ``module.function(out_dir)`` on two CPU processes.

    The processes are forked from a fresh interpreter: forking the test process itself, whose OpenMP thread pool
    may already be running, can deadlock the children.
    """
    script = (
        "from pathlib import Path\n"
        "from accelerate import debug_launcher\n"
        f"from {module} import {function}\n"
        f"debug_launcher({function}, args=(Path({str(out_dir)!r}),), num_processes=2)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"two-process run of {module}.{function} failed:\n{result.stderr[-3000:]}")
