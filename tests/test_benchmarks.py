"""A smoke run of the benchmark (stress: it starts every server): the harness works, the table
is complete.

The real figures come from `python benchmarks/run.py` and are never asserted in a test, and no
test may touch them: `benchmarks/results/` is committed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "benchmarks" / "results"


def _fingerprint() -> dict[str, str]:
    """The committed results' names and contents (hashes), to show they were not touched."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(COMMITTED.iterdir())
        if path.is_file()
    }


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=590,
        cwd=ROOT,
    )


@pytest.mark.stress
@pytest.mark.timeout(600)
def test_quick_benchmark_runs_every_server_and_writes_the_table(tmp_path):
    before = _fingerprint()
    done = _bench("--quick", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    for server in ("threadroom", "threadroom --lock-while-sending", "asyncio streams"):
        assert f"| {server} |" in done.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    ours = [r for r in results if r["server"] == "threadroom"]
    assert ours
    assert all(r["ok"] for r in ours), ours
    # every load scenario delivered everything: nothing lost, doubled or reordered
    assert all(r["lost"] == r["duplicated"] == r["out_of_order"] == 0 for r in results)
    assert _fingerprint() == before


def test_a_quick_run_never_writes_to_the_committed_results(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    assert bench.out_dir(quick=False, out=None) == COMMITTED
    quick = bench.out_dir(quick=True, out=None)
    assert quick != COMMITTED
    assert COMMITTED not in quick.parents
    ignored = (ROOT / ".gitignore").read_text().split()
    assert f"{quick.relative_to(ROOT).as_posix()}/" in ignored


def test_the_chart_is_drawn_from_a_results_file_alone(tmp_path):
    before = _fingerprint()
    done = _bench("--chart-only", str(COMMITTED / "results.json"), "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    if importlib.util.find_spec("matplotlib") is None:
        assert "no chart: pip install matplotlib" in done.stdout
    else:
        assert (tmp_path / "chart.png").stat().st_size > 10_000
    assert _fingerprint() == before
