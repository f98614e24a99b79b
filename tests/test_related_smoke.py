"""Smoke test of experiments/related.py with --rounds 1 --clients 2 on tiny synthetic data (every arm)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # end-to-end runs (see the fast tier in README.md)

ROOT = Path(__file__).resolve().parents[1]


def test_related_runs_every_arm_tabulates_and_plots(tmp_path):
    # Execute
    command = [sys.executable, str(ROOT / "experiments" / "related.py"), "--datasets", "synthetic",
               "--rounds", "1", "--clients", "2", "--out", str(tmp_path), "--threads", "1",
               "--set", "train_subset=64", "--set", "test_subset=32", "--set", "batch_size=16",
               "--set", "eval_batch_size=32", "--set", "data_dir=''", "--memory"]
    proc = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=900)
    # Assert: one row per arm, the decoupled arms send nothing back, time priced at both links
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "table_synthetic.csv")
    assert len(table) == 8 and set(table["rounds"]) == {1}
    decoupled = table["arm"].str.startswith("decoupled")
    assert (table.loc[decoupled, "MB_down/round"] == 0).all() and (table.loc[~decoupled, "MB_down/round"] > 0).all()
    assert (table["client_peak_MB"] > 0).all() and (table["server_peak_MB"] > table["client_peak_MB"]).all()
    pruned = table.set_index("arm").loc["prune50_cut6"]
    assert pruned["client_nonzero_params"] < table.set_index("arm").loc["standard_cut6", "client_nonzero_params"]
    assert (tmp_path / "simtime_synthetic.png").stat().st_size > 10_000
    memory = (tmp_path / "memory_synthetic.md").read_text()
    assert "decoupled_linear_cut6" in memory and "profiler" in memory
    # a second call finds every run finished and only tabulates
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "== synthetic / standard" in again.stdout
