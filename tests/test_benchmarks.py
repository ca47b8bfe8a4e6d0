"""A smoke run of the benchmark (about 4 min on two cores: stress): the harness works, the table is
complete.

The real figures come from `python benchmarks/run.py` and are never asserted in a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.stress
@pytest.mark.timeout(600)
def test_quick_benchmark_runs_every_server_and_writes_the_table(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=590,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for server in ("threadroom", "threadroom --lock-while-sending", "asyncio streams"):
        assert f"| {server} |" in done.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    ours = [r for r in results if r["server"] == "threadroom"]
    assert ours
    assert all(r["ok"] for r in ours), ours
    # every load scenario delivered everything: nothing lost, doubled or reordered
    assert all(r["lost"] == r["duplicated"] == r["out_of_order"] == 0 for r in results)
