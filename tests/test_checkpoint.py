"""Checkpoint/resume of the local runner: an interrupted run resumes to the same metrics."""

import json

import pandas as pd
import pytest

from acp_flower.config import ExperimentConfig
from acp_flower.metrics import TIMING_COLUMNS
from acp_flower.runners import local
from acp_flower.runners.local import run_experiment
from acp_flower.runtime import Evaluator
from acp_flower.runtime import checkpoint as ckpt_mod
from acp_flower.runtime.checkpoint import CHECKPOINT_FILE

TINY = dict(dataset="synthetic", train_subset=192, test_subset=96, num_clients=2, rounds=3, batch_size=32,
            eval_batch_size=96, optimizer="adam", lr=1e-3, augment=True)


def _cfg(**changes):
    return ExperimentConfig.from_dict({**TINY, **changes})


def _metrics(run_dir):
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=list(TIMING_COLUMNS))


class Interrupt(Exception):
    pass


def _interrupt_evaluation_of_round(monkeypatch, server_round):
    calls = {"n": 0}
    real = Evaluator.__call__

    def evaluate(self, *args):
        calls["n"] += 1
        if calls["n"] == server_round:
            raise Interrupt
        return real(self, *args)

    monkeypatch.setattr(Evaluator, "__call__", evaluate)


def _interrupt_checkpoint_of_round(monkeypatch, server_round):
    """Crash after the round's metrics row is written but before its checkpoint is."""
    real = ckpt_mod.save_checkpoint

    def save(out_dir, cfg, ckpt):
        if ckpt.server_round == server_round:
            raise Interrupt
        return real(out_dir, cfg, ckpt)

    monkeypatch.setattr(local, "save_checkpoint", save)


@pytest.mark.parametrize("scheme,codec", [
    ("vanilla", "acp"), ("splitfed_v1", "randtopk"), ("splitfed_v2", "acp"),
])
@pytest.mark.slow
def test_resumed_run_matches_uninterrupted_run(tmp_path, monkeypatch, scheme, codec):
    cfg = _cfg(scheme=scheme, codec=codec)
    straight = tmp_path / "straight"
    run_experiment(cfg, straight, progress=False)
    for interrupt, rows_left in ((_interrupt_evaluation_of_round, 2), (_interrupt_checkpoint_of_round, 3)):
        run_dir = tmp_path / interrupt.__name__
        with monkeypatch.context() as patch:
            interrupt(patch, 3)
            with pytest.raises(Interrupt):
                run_experiment(cfg, run_dir, progress=False, checkpoint=True)
        assert (run_dir / CHECKPOINT_FILE).exists()
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
        assert len(_metrics(run_dir)) == rows_left

        run_experiment(cfg, run_dir, progress=False, resume=True)
        pd.testing.assert_frame_equal(_metrics(run_dir), _metrics(straight), check_exact=True)
        trace = pd.read_csv(run_dir / "prune_trace.csv")
        pd.testing.assert_frame_equal(trace, pd.read_csv(straight / "prune_trace.csv"), check_exact=True)
        assert (run_dir / "summary.json").exists()
        assert not (run_dir / CHECKPOINT_FILE).exists()  # removed once the run is complete


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_config(tmp_path, monkeypatch):
    cfg = _cfg(codec="acp")
    with monkeypatch.context() as patch:
        _interrupt_evaluation_of_round(patch, 2)
        with pytest.raises(Interrupt):
            run_experiment(cfg, tmp_path, progress=False, checkpoint=True)
    before = (tmp_path / "metrics.csv").read_text()
    with pytest.raises(ValueError, match=r"different config \(keys \['lr'\]\)"):
        run_experiment(cfg.replace(lr=2e-3), tmp_path, progress=False, resume=True)
    assert (tmp_path / "metrics.csv").read_text() == before
    # a key that does not change results (where the data lives) may differ
    run_experiment(cfg.replace(device="cpu"), tmp_path, progress=False, resume=True)
    assert len(_metrics(tmp_path)) == 3


def test_resume_errors(tmp_path):
    cfg = _cfg(rounds=1)
    with pytest.raises(ValueError, match="need an out_dir"):
        run_experiment(cfg, None, progress=False, resume=True)
    run_experiment(cfg, tmp_path / "done", progress=False)
    with pytest.raises(FileExistsError, match="finished run"):
        run_experiment(cfg, tmp_path / "done", progress=False, resume=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"checkpoint {bad / CHECKPOINT_FILE} is unreadable"):
        run_experiment(cfg, bad, progress=False, resume=True)


@pytest.mark.slow
def test_resume_without_checkpoint_restarts_a_partial_run(tmp_path, monkeypatch):
    cfg = _cfg(rounds=2)
    with monkeypatch.context() as patch:
        _interrupt_evaluation_of_round(patch, 2)
        with pytest.raises(Interrupt):
            run_experiment(cfg, tmp_path / "a", progress=False)  # no checkpoint written
    assert not (tmp_path / "a" / CHECKPOINT_FILE).exists()
    run_experiment(cfg, tmp_path / "a", progress=False, resume=True)
    run_experiment(cfg, tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(_metrics(tmp_path / "a"), _metrics(tmp_path / "b"), check_exact=True)
