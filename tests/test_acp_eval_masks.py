"""experiments/acp_eval_masks.py on a tiny synthetic ACP-SL run left with its checkpoint."""

import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from acp_flower.config import ExperimentConfig
from acp_flower.runners import local
from acp_flower.runners.local import run_experiment
from acp_flower.runtime.checkpoint import CHECKPOINT_FILE
from acp_flower.runtime.common import build_split
from acp_flower.runtime.evaluate import recalibrate_batchnorm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import acp_eval_masks

pytestmark = pytest.mark.slow  # end-to-end runs (see the fast tier in README.md)

TINY = dict(dataset="synthetic", train_subset=256, test_subset=128, num_clients=2, rounds=2, batch_size=32,
            eval_batch_size=64, optimizer="adam", lr=1e-3, codec="acp", partition="dirichlet")


def _run_keeping_checkpoint(tmp_path, monkeypatch, **changes) -> Path:
    monkeypatch.setattr(local, "remove_checkpoint", lambda out_dir: None)
    out = tmp_path / "run"
    run_experiment(ExperimentConfig.from_dict({**TINY, **changes}), out, progress=False, checkpoint=True)
    return out


def test_own_mask_reproduces_the_recorded_accuracy(tmp_path, monkeypatch, capsys):
    # Prepare
    run = _run_keeping_checkpoint(tmp_path, monkeypatch)
    # Execute
    assert acp_eval_masks.main([str(run / CHECKPOINT_FILE), "--train-samples", "64", "--recalibrate", "96",
                                "--out", str(tmp_path / "masks.csv")]) == 0
    # Assert: the codec's own mask gives metrics.csv's accuracy exactly; every mask has a row
    table = pd.read_csv(tmp_path / "masks.csv", index_col="mask")
    recorded = pd.read_csv(run / "metrics.csv")["test_accuracy"].iloc[-1]
    assert table.loc["hist_last", "test"] == pytest.approx(round(recorded * 100, 2))
    assert {"hist_base", "hist_client0", "hist_client1", "hist_mean", "l0_batch", "all",
            "lcis_test_labels"} <= set(table.index)
    assert list(table.columns) == ["test", "train (64 images)", "test, BN recalibrated (96 train images)"]
    assert table.to_numpy().min() >= 0 and table.to_numpy().max() <= 100
    assert "| hist_last |" in capsys.readouterr().out


def test_recalibration_changes_only_batchnorm_statistics():
    torch.manual_seed(0)
    split = build_split(ExperimentConfig(dataset="synthetic"))
    head, tail = split.head.eval(), split.tail.eval()
    data = torch.utils.data.TensorDataset(torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))
    new = acp_eval_masks.recalibrate_bn(head, tail, lambda a, y: a, data, 32, torch.device("cpu"))
    old_state, new_state = tail.state_dict(), new.state_dict()
    stats = [k for k in old_state if k.endswith(("running_mean", "running_var"))]
    assert stats and all(not torch.equal(old_state[k], new_state[k]) for k in stats)
    weights = [k for k in old_state if k not in stats and not k.endswith("num_batches_tracked")]
    assert all(torch.equal(old_state[k], new_state[k]) for k in weights)
    assert not new.training


def test_refuses_a_run_of_another_codec(tmp_path, monkeypatch):
    run = _run_keeping_checkpoint(tmp_path, monkeypatch, codec="quantize", rounds=1)
    with pytest.raises(SystemExit):
        acp_eval_masks.main([str(run / CHECKPOINT_FILE)])


def test_recalibrate_batchnorm_takes_the_exact_average_over_the_inputs():
    bn = torch.nn.BatchNorm2d(3, momentum=0.1)
    batches = [torch.randn(8, 3, 4, 4) * s + s for s in (1.0, 2.0, 3.0)]
    recalibrate_batchnorm(bn, batches)
    assert torch.allclose(bn.running_mean, torch.cat(batches).mean(dim=(0, 2, 3)), atol=1e-5)
    unbiased = torch.stack([b.transpose(0, 1).reshape(3, -1).var(dim=1) for b in batches]).mean(0)
    assert torch.allclose(bn.running_var, unbiased, atol=1e-4)
    assert bn.momentum == 0.1 and not bn.training
