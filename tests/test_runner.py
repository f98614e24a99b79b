"""Local runner end to end on synthetic data: outputs, determinism, learning, bad input."""

import json

import pandas as pd
import pytest

from acp_flower.cli import main
from acp_flower.config import ExperimentConfig
from acp_flower.metrics import METRIC_COLUMNS, TIMING_COLUMNS
from acp_flower.runners.local import run_experiment

TINY = dict(dataset="synthetic", train_subset=256, test_subset=128, num_clients=2, rounds=2, batch_size=32,
            eval_batch_size=128, optimizer="adam", lr=1e-3, target_accuracies=(0.15, 0.99))


def _cfg(**changes):
    return ExperimentConfig.from_dict({**TINY, **changes})


def test_outputs_written(tmp_path):
    frame = run_experiment(_cfg(codec="acp"), tmp_path / "out", progress=False)
    metrics = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert list(metrics.columns) == list(METRIC_COLUMNS)
    assert metrics["round"].tolist() == [1, 2] and len(frame) == 2
    # 256 samples / batch 32 = 8 exchanges per round; ACP keeps 30% +- of 64 channels
    assert (metrics["bytes_up"] > 0).all() and (metrics["bytes_down"] > 0).all()
    assert metrics["mean_prune_ratio"].between(0.6 - 1 / 64, 0.8 + 1 / 64).all()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rounds_completed"] == 2
    assert summary["final_accuracy"] == pytest.approx(metrics["test_accuracy"].iloc[-1])
    assert set(summary["targets"]) == {"0.15", "0.99"} and summary["targets"]["0.99"] is None
    assert ExperimentConfig.from_toml(tmp_path / "out" / "config.toml") == _cfg(codec="acp")


@pytest.mark.parametrize("scheme", ["vanilla", "splitfed_v1", "splitfed_v2"])
@pytest.mark.slow
def test_same_seed_same_metrics(tmp_path, scheme):
    cfg = _cfg(codec="randtopk", scheme=scheme, augment=True, rounds=1)
    run_experiment(cfg, tmp_path / "a", progress=False)
    run_experiment(cfg, tmp_path / "b", progress=False)
    a = pd.read_csv(tmp_path / "a" / "metrics.csv").drop(columns=list(TIMING_COLUMNS))
    b = pd.read_csv(tmp_path / "b" / "metrics.csv").drop(columns=list(TIMING_COLUMNS))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    other = run_experiment(cfg.replace(seed=1), None, progress=False).drop(columns=list(TIMING_COLUMNS))
    assert not other.equals(a)


def test_standard_bytes_are_exact():
    frame = run_experiment(_cfg(codec="standard", rounds=1), None, progress=False)
    # 8 batches of 32 samples, 64x8x8 float32: header 23 + labels 1+32 + values
    per_batch_up = 23 + 33 + 32 * 64 * 8 * 8 * 4
    per_batch_down = 23 + 32 * 64 * 8 * 8 * 4
    assert frame["bytes_up"].iloc[0] == 8 * per_batch_up
    assert frame["bytes_down"].iloc[0] == 8 * per_batch_down


@pytest.mark.parametrize("codec", ["standard", "acp", "randtopk", "quantize"])
@pytest.mark.slow
def test_every_codec_beats_chance(codec):
    frame = run_experiment(_cfg(codec=codec, train_subset=800, test_subset=300, rounds=3), None, progress=False)
    assert frame["test_accuracy"].max() > 0.3  # 10 classes: chance is 0.1


def test_bad_inputs_fail_before_writing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="acp-flower data fetch"):
        run_experiment(_cfg(dataset="cifar10", data_dir=str(tmp_path / "nodata"), download=False), out)
    with pytest.raises(ValueError, match="'num_clients': 300 clients but only 256"):
        run_experiment(_cfg(num_clients=300), out)
    with pytest.raises(ValueError, match="'train_subset'"):
        run_experiment(_cfg(train_subset=10**6), out)
    assert not out.exists()


def test_existing_results_are_not_overwritten(tmp_path):
    (tmp_path / "metrics.csv").write_text("x\n")
    with pytest.raises(FileExistsError, match="already holds"):
        run_experiment(_cfg(), tmp_path)
    assert (tmp_path / "metrics.csv").read_text() == "x\n"


def test_cli_run_and_errors(tmp_path, capsys):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in TINY.items()
                                if k != "target_accuracies"))
    assert main(["run", "--config", str(cfg_file), "--set", "rounds=1", "--set", "codec=quantize",
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert len(pd.read_csv(tmp_path / "o" / "metrics.csv")) == 1
    assert main(["run", "--config", str(cfg_file), "--set", "rounds=1", "--set", "codec=quantize",
                 "--out", str(tmp_path / "o"), "--no-progress", "--resume"]) == 2  # finished: nothing to resume
    assert "finished run" in capsys.readouterr().err
    assert main(["run", "--config", str(cfg_file), "--set", "codec=gzip", "--out", str(tmp_path / "p")]) == 2
    assert "'codec'" in capsys.readouterr().err and not (tmp_path / "p").exists()


def test_prune_trace_has_one_row_per_upload_matching_the_round_mean(tmp_path):
    run_experiment(_cfg(codec="acp", acp_group_score="literal"), tmp_path / "out", progress=False)
    trace = pd.read_csv(tmp_path / "out" / "prune_trace.csv")
    metrics = pd.read_csv(tmp_path / "out" / "metrics.csv")
    # 2 clients x 128 samples / batch 32 = 8 uploads per round
    assert trace.groupby("round").size().tolist() == [8, 8]
    assert trace["prune_ratio"].between(0.6 - 1 / 64, 0.8 + 1 / 64).all()
    means = trace.groupby("round")["prune_ratio"].mean().tolist()  # equal batch sizes: plain mean
    assert means == pytest.approx(metrics["mean_prune_ratio"].tolist())


@pytest.mark.slow
def test_stop_accuracy_ends_the_run_at_the_first_round_that_reaches_it(tmp_path):
    full = run_experiment(_cfg(codec="quantize", rounds=3), None, progress=False).drop(columns=list(TIMING_COLUMNS))
    target = full["test_accuracy"].max()
    stop_round = int(full.index[full["test_accuracy"] >= target][0]) + 1
    cfg = _cfg(codec="quantize", rounds=3, stop_accuracy=target)
    stopped = run_experiment(cfg, tmp_path / "out", progress=False).drop(columns=list(TIMING_COLUMNS))
    # The rounds before the stop are the same rounds as in the full run.
    pd.testing.assert_frame_equal(stopped, full.iloc[:stop_round], check_exact=True)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rounds_completed"] == stop_round and summary["stopped_early"] is (stop_round < 3)


@pytest.mark.slow
def test_bn_recalibration_changes_evaluation_only(tmp_path):
    base = run_experiment(_cfg(codec="acp", augment=True), None, progress=False).drop(columns=list(TIMING_COLUMNS))
    cal = run_experiment(_cfg(codec="acp", augment=True, eval_bn_recalibration=96), None,
                         progress=False).drop(columns=list(TIMING_COLUMNS))
    training = [c for c in base.columns if not c.startswith("test_")]
    # Training draws nothing from the calibration pass: identical rows, bit for bit.
    pd.testing.assert_frame_equal(base[training], cal[training], check_exact=True)
    assert not base["test_loss"].equals(cal["test_loss"])


def test_bn_recalibration_larger_than_the_training_data_fails_before_writing(tmp_path):
    with pytest.raises(ValueError, match="'eval_bn_recalibration'"):
        run_experiment(_cfg(eval_bn_recalibration=257), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
