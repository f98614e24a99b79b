"""Smoke tests of experiments/reproduce.py and experiments/paper/*.py with --rounds 1 --clients 2.

One figure (eq10: two runs) goes through the real local runner on tiny synthetic data; the
other figure scripts are checked with --dry-run (a real run of every figure is 28 training
runs, minutes on a 2-core CPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # end-to-end runs (see the fast tier in README.md)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--rounds", "1", "--clients", "2", "--device", "cpu",
         "--set", "dataset=synthetic", "--set", "train_subset=32", "--set", "test_subset=16",
         "--set", "batch_size=16", "--set", "eval_batch_size=16"]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_eq10_script_runs_the_local_runner_and_resumes(tmp_path):
    # Execute
    first = _run("experiments/paper/eq10.py", *SMOKE, "--out", str(tmp_path))
    second = _run("experiments/paper/eq10.py", *SMOKE, "--out", str(tmp_path))
    # Assert
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("done, skipped") == 2
    for stem in ("fig4_cifar10_noniid_acp", "eq10_cifar10_noniid_literal"):
        run = tmp_path / "runs" / stem / "seed0"
        metrics = pd.read_csv(run / "metrics.csv")
        assert list(metrics["round"]) == [1] and metrics["bytes_up"].iloc[0] > 0
        assert json.loads((run / "summary.json").read_text())["rounds_completed"] == 1
        assert len(pd.read_csv(run / "prune_trace.csv")) > 0
    table = pd.read_csv(tmp_path / "figeq10" / "table.csv")
    assert list(table["curve"]) == ["ratio (default)", "literal eq. (10)"]
    assert (tmp_path / "figeq10" / "figeq10_cifar10_noniid.png").stat().st_size > 0


@pytest.mark.parametrize("script", ["experiments/reproduce.py", "experiments/paper/fig3.py",
                                    "experiments/paper/fig4.py", "experiments/paper/fig5.py",
                                    "experiments/paper/fig6.py"])
def test_figure_scripts_accept_smoke_options(tmp_path, script):
    extra = ["--figure", "all"] if script.endswith("reproduce.py") else []
    result = _run(script, *extra, *SMOKE, "--out", str(tmp_path), "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert lines and all(line.endswith(": missing") for line in lines)
    if extra:
        assert len(lines) == 28, "unique runs over all figures (shared configs once)"


def test_step_benchmark_prints_its_ratios():
    result = _run("experiments/bench_step.py", "--steps", "1", "--batch-size", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    ratios = dict(kv.split("=") for kv in result.stdout.strip().splitlines()[-1].removeprefix("ratios: ").split())
    assert set(ratios) == {"standard/bare", "acp/standard", "bare/bare_nchw"}
    assert all(float(v) > 0 for v in ratios.values())
