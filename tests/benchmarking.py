"""Smoke runs of the scripts in benchmarks/: each as its own process, as a person runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(
    script: str, *args: str, timeout: float = 100
) -> subprocess.CompletedProcess[str]:
    """Runs `benchmarks/<script>` with `args` from the repository's root; fails the test with
    its output if it does not exit 0."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def quick_figures(script: str, timeout: float = 100) -> Any:
    """The JSON figures `benchmarks/<script> --quick` prints."""
    return json.loads(run_benchmark(script, "--quick", timeout=timeout).stdout)
