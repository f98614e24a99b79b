"""Smoke test of experiments/adc.py: two arms, one round, a tiny ViT on synthetic data, two seeds pooled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # end-to-end runs (see the fast tier in README.md)

ROOT = Path(__file__).resolve().parents[1]
TINY = ["dataset=synthetic", "data_dir=''", "train_subset=128", "test_subset=64", "batch_size=32", "vit_depth=2",
        "vit_embed_dim=32", "vit_heads=2", "cut_layer=1", "augment=false"]


def _adc(out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "experiments" / "adc.py"), "--arms", "standard", "adc10", "--rounds", "1",
               "--out", str(out), *[a for item in TINY for a in ("--set", item)], *extra]
    return subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=900)


def test_adc_experiment_tabulates_plots_and_pools_seeds(tmp_path):
    seed1 = _adc(tmp_path / "s1", "--set", "seed=1")
    assert seed1.returncode == 0, seed1.stdout[-2000:] + seed1.stderr[-3000:]
    seed0 = _adc(tmp_path / "s0", "--pool", str(tmp_path / "s1"))
    assert seed0.returncode == 0, seed0.stdout[-2000:] + seed0.stderr[-3000:]
    table = pd.read_csv(tmp_path / "s0" / "table.csv").set_index("arm")
    assert list(table.index) == ["standard", "adc10"] and set(table["rounds"]) == {1}
    assert 0.05 < table.loc["adc10", "up_ratio"] < 0.2  # about a tenth of Standard-SL's up-link bytes
    assert (tmp_path / "s0" / "accuracy_vs_mb.png").stat().st_size > 10_000
    seeds = pd.read_csv(tmp_path / "s0" / "table_seeds.csv").set_index("arm")
    assert set(seeds["seeds"]) == {2}
    runs = [pd.read_csv(tmp_path / s / "table.csv").set_index("arm").loc["adc10", "final_acc"] for s in ("s0", "s1")]
    assert seeds.loc["adc10", "final_acc_mean"] == pytest.approx(sum(runs) / 2)
