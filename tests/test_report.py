"""Tests of acp_flower.report and experiments/reproduce.py on fabricated run outputs (no training)."""

from __future__ import annotations

import importlib.util
import json
import math
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import torch

from acp_flower import report
from acp_flower.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "experiments" / "paper" / "manifest.toml"
CONFIG_DIR = ROOT / "experiments" / "configs" / "paper"


# ---------------------------------------------------------------- helpers
def _load_reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "experiments" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_run(run_dir: Path, accuracies: list[float], *, bytes_up: int = 1_000_000, bytes_down: int = 500_000,
               cfg: ExperimentConfig | None = None, finished: bool = True) -> Path:
    """Fabricate a run directory in the local runner's format."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = cfg or ExperimentConfig(dataset="synthetic", rounds=len(accuracies), target_accuracies=(0.65,))
    (run_dir / "config.toml").write_text(cfg.to_toml())
    rows = [{"round": r, "test_accuracy": a, "test_loss": 1.0, "train_loss": 2.0 / r, "train_accuracy": a,
             "bytes_up": bytes_up, "bytes_down": bytes_down, "ideal_bits_up": 8 * bytes_up,
             "ideal_bits_down": 8 * bytes_down, "mean_prune_ratio": 0.7, "clients": 5, "wall_s": 2.0}
            for r, a in enumerate(accuracies, 1)]
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)
    if finished:
        (run_dir / "summary.json").write_text(json.dumps({"final_accuracy": accuracies[-1]}))
    return run_dir


def _prepare_figure() -> report.Figure:
    curves = (report.Curve("A", "a.toml", 71.43, {0.65: 46.0}), report.Curve("B", "b.toml"))
    return report.Figure("t", "Test figure", (report.Panel("p", "Panel p", curves, ("train_loss",)),))


# ---------------------------------------------------------------- manifest and paper configs
def test_manifest_configs_exist_load_and_state_the_paper_setup():
    # Prepare
    figures = report.load_manifest(MANIFEST)
    # Execute
    configs = {c.config for f in figures.values() for p in f.panels for c in p.curves}
    # Assert
    assert set(figures) == {"3", "4", "5", "6", "eq10"}
    assert len(figures["4"].panels) == 4 and all(len(p.curves) == 4 for p in figures["4"].panels)
    assert configs == {p.name for p in CONFIG_DIR.glob("*.toml")}, "every config is used, every used one exists"
    for name in configs:
        text = (CONFIG_DIR / name).read_text()
        assert text.startswith("# ") and "Paper" in text.split("\n\n")[0], f"{name}: opening comment"
        cfg = ExperimentConfig.from_toml(CONFIG_DIR / name)
        assert (cfg.cut_layer, cfg.num_clients, cfg.batch_size, cfg.lr, cfg.rounds) == (4, 5, 128, 0.00015, 100)
        assert (cfg.scheme, cfg.optimizer, cfg.model) == ("vanilla", "sgd", "resnet18")
        assert cfg.partition == "iid" or (cfg.partition, cfg.dirichlet_alpha) == ("dirichlet", 0.5)
        assert cfg.target_accuracies, f"{name}: a target accuracy"


def test_manifest_paper_numbers():
    figures = report.load_manifest(MANIFEST)
    acp = {p.id: next(c for c in p.curves if c.label == "ACP-SL") for p in figures["4"].panels}
    assert [acp[k].paper_final_accuracy for k in ("cifar10_iid", "cifar10_noniid", "fmnist_iid", "fmnist_noniid")] \
        == [75.88, 71.43, 92.90, 85.09]
    assert acp["cifar10_noniid"].paper_rounds == {0.65: 46.0}


@pytest.mark.parametrize("setting", ["cifar10_iid", "fmnist_noniid"])
def test_baseline_wire_bytes_match_acp_within_ten_percent(setting):
    # Prepare: one batch of post-ReLU smashed data of the paper's cut (64 x 8 x 8 or 64 x 7 x 7).
    from acp_flower.codecs import build_codec
    from acp_flower.wire import to_bytes

    side = 8 if setting.startswith("cifar10") else 7
    torch.manual_seed(0)
    smashed = torch.relu(torch.randn(128, 64, side, side))
    labels = torch.randint(0, 10, (128,))
    sizes = {}
    for codec in ("standard", "randtopk", "quantize", "acp"):
        cfg = ExperimentConfig.from_toml(CONFIG_DIR / f"fig4_{setting}_{codec}.toml")
        if codec == "acp":
            cfg = cfg.replace(acp_ratio="fixed")  # P_base 0.7, the adaptive ratio's centre
        # Execute
        sizes[codec] = len(to_bytes(build_codec(cfg, total_steps=10).encode(smashed, labels)))
    # Assert: ACP keeps 19 of 64 channels (29.7%); the baselines are within 10% of that.
    assert sizes["acp"] / sizes["standard"] == pytest.approx(19 / 64, rel=0.01)
    for codec in ("randtopk", "quantize"):
        assert 0.9 < sizes[codec] / sizes["acp"] < 1.1, (codec, sizes)


# ---------------------------------------------------------------- one run
def test_first_reach_and_summarize_run(tmp_path):
    # Prepare: 1.5 MB per round; 0.65 first reached in round 3, 0.99 never.
    run = _write_run(tmp_path / "r", [0.30, 0.60, 0.66, 0.64, 0.70])
    # Execute
    metrics = report.read_metrics(run)
    summary = report.summarize_run(metrics, [0.65, 0.99])
    # Assert
    assert report.first_reach(metrics, 0.65) == (3, pytest.approx(4.5))
    assert report.first_reach(metrics, 0.66) == (3, pytest.approx(4.5)), "reaching exactly counts"
    assert summary["rounds_to_0.99"] is None and summary["mb_to_0.99"] is None
    assert summary["final_accuracy"] == 0.70 and summary["best_accuracy"] == 0.70
    assert summary["rounds_completed"] == 5 and summary["total_mb"] == pytest.approx(7.5)
    assert summary["wall_s"] == pytest.approx(10.0)
    assert list(metrics["cum_mb_up"]) == pytest.approx([1, 2, 3, 4, 5])


# ---------------------------------------------------------------- aggregation
def test_aggregate_mean_std_by_hand(tmp_path):
    # Prepare: curve A, three seeds, finals 0.5 / 0.6 / 0.7 (mean 60, sample std 10);
    # bests 0.8 / 0.6 / 0.7 (mean 70, std 10); 0.65 reached in rounds 2 and 4, never by seed 1.
    figure = _prepare_figure()
    runs = tmp_path / "runs"
    _write_run(runs / "a" / "seed0", [0.1, 0.8, 0.5, 0.5])
    _write_run(runs / "a" / "seed1", [0.1, 0.2, 0.3, 0.6])
    _write_run(runs / "a" / "seed2", [0.1, 0.2, 0.3, 0.7])
    _write_run(runs / "b" / "seed0", [0.2, 0.4])
    # Execute
    table = report.aggregate(report.collect_runs(figure, runs, [0, 1, 2]), figure)
    a, b = table.iloc[0], table.iloc[1]
    # Assert
    assert (a["curve"], a["seeds"], b["seeds"]) == ("A", 3, 1)
    assert a["final_accuracy_mean"] == pytest.approx(60.0) and a["final_accuracy_std"] == pytest.approx(10.0)
    assert a["best_accuracy_mean"] == pytest.approx(70.0) and a["best_accuracy_std"] == pytest.approx(10.0)
    assert a["reached_0.65"] == 2 and a["rounds_to_0.65_mean"] == pytest.approx(3.0)
    assert a["rounds_to_0.65_std"] == pytest.approx(math.sqrt(2.0))
    assert a["mb_to_0.65_mean"] == pytest.approx((3.0 + 6.0) / 2)
    assert a["paper_final_accuracy"] == 71.43 and a["paper_rounds_to_0.65"] == 46.0
    assert math.isnan(b["final_accuracy_std"]) and b["reached_0.65"] == 0, "one seed: no std"
    assert b["total_mb_mean"] == pytest.approx(3.0)


def test_collect_runs_ignores_unfinished(tmp_path):
    figure = _prepare_figure()
    _write_run(tmp_path / "a" / "seed0", [0.5])
    _write_run(tmp_path / "a" / "seed1", [0.9], finished=False)
    runs = report.collect_runs(figure, tmp_path, [0, 1])
    assert list(runs["seed"]) == [0]


def test_partial_runs_are_shown_only_when_asked_and_marked(tmp_path):
    figure = _prepare_figure()
    _write_run(tmp_path / "runs" / "a" / "seed0", [0.2, 0.7, 0.6], finished=False)
    _write_run(tmp_path / "runs" / "b" / "seed0", [0.4, 0.5])
    (tmp_path / "runs" / "b" / "seed1").mkdir(parents=True)  # started, no round yet
    result = report.write_figure_report(figure, tmp_path / "runs", tmp_path / "out", [0, 1], partial=True)
    row = next(line for line in result["markdown"].splitlines() if line.startswith("| p | A"))
    assert row.startswith("| p | A (partial: 3 rounds) | 1 | 60.00 | 70.00 |") and "65%: 2.0 (1/1)" in row
    assert "| p | B | 1 | 50.00 |" in result["markdown"], "complete runs are not marked"
    assert len(result["plots"]) == 1
    assert sorted(p.parent.name + "/" + p.name for p in result["missing"]) == ["a/seed0", "a/seed1", "b/seed1"]
    finished_only = report.write_figure_report(figure, tmp_path / "runs", tmp_path / "out2", [0, 1])
    assert "| p | A" not in finished_only["markdown"]


def test_markdown_lists_ours_next_to_paper(tmp_path):
    figure = _prepare_figure()
    _write_run(tmp_path / "a" / "seed0", [0.1, 0.7])
    _write_run(tmp_path / "a" / "seed1", [0.1, 0.5])
    md = report.to_markdown(report.aggregate(report.collect_runs(figure, tmp_path, [0, 1]), figure))
    row = next(line for line in md.splitlines() if line.startswith("| p | A |"))
    assert "60.00 ± 14.14" in row and "71.43" in row
    assert "65%: 2.0 (1/2), 3 MB; paper 46" in row


def test_write_figure_report_writes_tables_and_one_png_per_panel(tmp_path):
    # Prepare
    figure = _prepare_figure()
    _write_run(tmp_path / "runs" / "a" / "seed0", [0.1, 0.7])
    _write_run(tmp_path / "runs" / "b" / "seed0", [0.2, 0.4])
    # Execute
    out = report.write_figure_report(figure, tmp_path / "runs", tmp_path / "figt", [0, 1])
    # Assert
    assert [p.name for p in out["plots"]] == ["figt_p.png"]
    assert out["plots"][0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in (tmp_path / "figt").iterdir()} == {"figt_p.png", "table.md", "table.csv", "runs.csv"}
    assert len(pd.read_csv(tmp_path / "figt" / "table.csv")) == 2
    assert len(out["missing"]) == 2, "seed 1 of both curves"


def test_mean_curve_uses_available_runs_per_round():
    a = pd.DataFrame({"round": [1, 2, 3], "test_accuracy": [0.2, 0.4, 0.6], "cum_mb": [1.0, 2.0, 3.0]})
    b = pd.DataFrame({"round": [1, 2], "test_accuracy": [0.4, 0.6], "cum_mb": [3.0, 6.0]})
    mc = report.mean_curve([a, b], "test_accuracy")
    assert list(mc["mean"]) == pytest.approx([0.3, 0.5, 0.6])
    assert list(mc["cum_mb"]) == pytest.approx([2.0, 4.0, 3.0])
    assert list(mc["n"]) == [2, 2, 1]


# ---------------------------------------------------------------- resume logic
def test_prepare_run_dir_keeps_finished_cleans_unfinished(tmp_path):
    # Prepare
    cfg = ExperimentConfig(dataset="synthetic", rounds=2)
    done = _write_run(tmp_path / "done", [0.1, 0.2], cfg=cfg)
    partial = _write_run(tmp_path / "partial", [0.1], cfg=cfg, finished=False)
    # Execute / Assert
    assert report.prepare_run_dir(done, cfg.to_dict()) is False and (done / "metrics.csv").exists()
    assert report.prepare_run_dir(done, cfg.replace(device="cpu", data_dir="elsewhere").to_dict()) is False
    assert report.prepare_run_dir(partial, cfg.to_dict()) is True and not partial.exists()
    assert report.prepare_run_dir(tmp_path / "missing") is True
    with pytest.raises(ValueError, match="rounds"):
        report.prepare_run_dir(done, cfg.replace(rounds=3).to_dict())
    assert (done / "summary.json").exists(), "a mismatching finished run is never deleted"


def test_prepare_run_dir_keeps_a_checkpointed_partial_run_and_old_configs_match(tmp_path):
    cfg = ExperimentConfig(dataset="synthetic", rounds=2)
    partial = _write_run(tmp_path / "partial", [0.1], cfg=cfg, finished=False)
    (partial / "checkpoint.pt").write_bytes(b"state")
    assert report.prepare_run_dir(partial, cfg.to_dict()) is True
    assert (partial / "checkpoint.pt").exists() and (partial / "metrics.csv").exists(), "kept to resume"
    # a run saved before a config key existed matches when the key has its default
    done = _write_run(tmp_path / "done", [0.1, 0.2], cfg=cfg)
    text = (done / "config.toml").read_text()
    (done / "config.toml").write_text("".join(line for line in text.splitlines(True) if not line.startswith("p_max")))
    assert report.prepare_run_dir(done, cfg.to_dict()) is False
    with pytest.raises(ValueError, match="p_max"):
        report.prepare_run_dir(done, cfg.replace(p_max=0.9).to_dict())


def test_reproduce_resumes_and_aggregates_with_a_fake_runner(tmp_path):
    # Prepare: a runner writing outputs in the local runner's format, counting its calls.
    reproduce = _load_reproduce()
    calls = []

    def fake_runner(cfg, out_dir):
        calls.append(out_dir.parent.name)
        _write_run(out_dir, [0.3 + 0.2 * r / cfg.rounds for r in range(1, cfg.rounds + 1)], cfg=cfg)

    argv = ["--figure", "eq10", "--rounds", "3", "--clients", "2", "--seeds", "2", "--out", str(tmp_path),
            "--set", "dataset=synthetic"]
    # Execute: first pass runs both curves x 2 seeds.
    assert reproduce.main(argv, runner=fake_runner) == 0
    first = list(calls)
    # an interrupted run: no summary.json, a stale file
    interrupted = tmp_path / "runs" / "eq10_cifar10_noniid_literal" / "seed1"
    (interrupted / "summary.json").unlink()
    (interrupted / "stale.txt").write_text("x")
    calls.clear()
    assert reproduce.main(argv, runner=fake_runner) == 0
    # Assert
    assert sorted(first) == sorted(["fig4_cifar10_noniid_acp", "eq10_cifar10_noniid_literal"] * 2)
    assert calls == ["eq10_cifar10_noniid_literal"], "only the interrupted run is redone"
    assert not (interrupted / "stale.txt").exists()
    with (interrupted / "config.toml").open("rb") as fh:
        saved = tomllib.load(fh)
    assert (saved["rounds"], saved["num_clients"], saved["seed"], saved["dataset"]) == (3, 2, 1, "synthetic")
    table = pd.read_csv(tmp_path / "figeq10" / "table.csv")
    assert list(table["seeds"]) == [2, 2]
    assert (tmp_path / "figeq10" / "figeq10_cifar10_noniid.png").exists()


def test_reproduce_only_runs_the_matching_configs(tmp_path):
    reproduce = _load_reproduce()
    calls = []

    def fake_runner(cfg, out_dir):
        calls.append(out_dir.parent.name)
        _write_run(out_dir, [0.5], cfg=cfg)

    argv = ["--figure", "4", "--rounds", "1", "--out", str(tmp_path), "--set", "dataset=synthetic",
            "--only", "fig4_fmnist_iid_*", "--only", "*_noniid_acp"]
    assert reproduce.main(argv, runner=fake_runner) == 0
    assert sorted(calls) == sorted(["fig4_fmnist_iid_standard", "fig4_fmnist_iid_randtopk", "fig4_fmnist_iid_quantize",
                                    "fig4_fmnist_iid_acp", "fig4_cifar10_noniid_acp", "fig4_fmnist_noniid_acp"])


def test_prune_trace_read_and_plotted(tmp_path):
    run = _write_run(tmp_path / "runs" / "a" / "seed0", [0.1, 0.7])
    pd.DataFrame({"round": [2, 1, 1], "step": [1, 2, 1], "tail_slot": 0,
                  "prune_ratio": [0.8, 0.6, 0.7]}).to_csv(run / "prune_trace.csv", index=False)
    trace = report.read_prune_trace(run)
    assert list(trace["prune_ratio"]) == [0.7, 0.6, 0.8] and list(trace["iteration"]) == [1, 2, 3]
    assert report.read_prune_trace(tmp_path) is None
    panel = report.Panel("p", "t", (report.Curve("A", "a.toml"),), prune_trace=True)
    path = report.plot_panel(panel, {"A": [report.read_metrics(run)]}, tmp_path / "x.png", (), {"A": trace})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reproduce_reports_failed_runs_and_refuses_config_mismatch(tmp_path):
    reproduce = _load_reproduce()

    def failing_runner(cfg, out_dir):
        raise RuntimeError("boom")

    argv = ["--figure", "eq10", "--rounds", "2", "--out", str(tmp_path), "--set", "dataset=synthetic"]
    assert reproduce.main(argv, runner=failing_runner) == 1
    assert reproduce.main(["--figure", "nope", "--out", str(tmp_path)]) == 2
    cfg = reproduce.resolve_config(CONFIG_DIR / "eq10_cifar10_noniid_literal.toml",
                                   reproduce.parse_args(argv), seed=0)
    _write_run(tmp_path / "runs" / "eq10_cifar10_noniid_literal" / "seed0", [0.5], cfg=cfg.replace(rounds=1))
    assert reproduce.main(argv, runner=failing_runner) == 2


def test_parse_seeds():
    reproduce = _load_reproduce()
    assert reproduce.parse_seeds("3") == [0, 1, 2]
    assert reproduce.parse_seeds("0,2,5") == [0, 2, 5]
    with pytest.raises(ValueError):
        reproduce.parse_seeds("0")
