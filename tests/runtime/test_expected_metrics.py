"""The default exchange reproduces the metrics of the code before the exchange became pluggable.

The reference is the code of commit 28e1c2b (the last with the hard-wired exchange), run
here by tests/expected/generate_backprop.py on the same machine (``git archive`` of that
commit into a temporary directory): float kernels differ in their last bits between CPUs,
and these tiny runs amplify such bits into different accuracies, so only the same machine
gives a reference that must match exactly. Every column but wall_s must match exactly (one
torch thread on both sides); columns added since are not compared. Without the git history
(a source tarball) the stored tests/expected/backprop_*.csv are the reference; they were
written at 28e1c2b on an earlier machine of this project and match on a CPU like it.
"""

import importlib.util
import os
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import pandas as pd
import pytest
import torch

from acp_flower.config import ExperimentConfig
from acp_flower.runners.local import run_experiment

REPO = Path(__file__).resolve().parents[2]
EXPECTED = REPO / "tests" / "expected"
OLD_COMMIT = "28e1c2b"
_spec = importlib.util.spec_from_file_location("generate_backprop", EXPECTED / "generate_backprop.py")
_gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gen)  # defines TINY and CASES; runs nothing at import

pytestmark = pytest.mark.slow

PINNED = {"splitfed_v1_acp": {"splitfed_tails": "persistent"}}
"""Defaults changed since OLD_COMMIT, set back to the old behaviour (these keys did not exist then)."""


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Directory of backprop_<case>.csv written by the code of OLD_COMMIT on this machine."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", OLD_COMMIT], capture_output=True)
    if archive.returncode != 0:  # no history: the stored files (see the module docstring)
        return EXPECTED
    root = tmp_path_factory.mktemp("old-code")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    out = root / "reference"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(EXPECTED / "generate_backprop.py"), str(out)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert f"acp_flower from {root / 'acp_flower'}" in proc.stdout  # the archived code ran, not this checkout
    return out


def test_reference_is_the_old_code_run_here(reference):
    if reference == EXPECTED:
        pytest.fail(f"no git history for commit {OLD_COMMIT}: compared with the stored files instead")
    assert sorted(p.name for p in reference.glob("*.csv")) == sorted(f"backprop_{n}.csv" for n in _gen.CASES)


@pytest.mark.parametrize("name", sorted(_gen.CASES))
def test_default_exchange_reproduces_the_old_metrics(reference, name):
    torch.set_num_threads(1)  # as the reference (tests/conftest.py restores it)
    expected = pd.read_csv(reference / f"backprop_{name}.csv")
    cfg = ExperimentConfig.from_dict({**_gen.TINY, **_gen.CASES[name], **PINNED.get(name, {})})
    frame = run_experiment(cfg, None, progress=False)
    pd.testing.assert_frame_equal(frame[list(expected.columns)], expected, check_exact=True, check_dtype=False)
