"""The default exchange reproduces the metrics of the code before the exchange became pluggable.

tests/expected/backprop_*.csv were written by tests/expected/generate_backprop.py at commit
28e1c2b (the last commit with the hard-wired exchange). Every column but wall_s must match
exactly (one torch thread, as they were written); columns added since are not compared.
"""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import torch

from acp_flower.config import ExperimentConfig
from acp_flower.runners.local import run_experiment

EXPECTED = Path(__file__).resolve().parents[1] / "expected"
_spec = importlib.util.spec_from_file_location("generate_backprop", EXPECTED / "generate_backprop.py")
_gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gen)  # defines TINY and CASES; runs nothing at import


@pytest.mark.parametrize("name", sorted(_gen.CASES))
def test_default_exchange_reproduces_the_stored_metrics(name):
    torch.set_num_threads(1)  # as when the files were written (tests/conftest.py restores it)
    expected = pd.read_csv(EXPECTED / f"backprop_{name}.csv")
    cfg = ExperimentConfig.from_dict({**_gen.TINY, **_gen.CASES[name]})
    frame = run_experiment(cfg, None, progress=False)
    pd.testing.assert_frame_equal(frame[list(expected.columns)], expected, check_exact=True, check_dtype=False)
