"""ServerApp + ClientApp logic of the ``flower`` transport, in process (no Flower engine).

``LoopbackGrid`` stands in for the simulation engine: Contexts persist per node, and
each message may land in another simulated actor process (separate caches), which is
what forces the ClientApp to rebuild its state from ``context.state`` and to replay a
round after a cache miss. Results must equal the local runner's exactly: the same
computations run in the same process, so there is no source of float differences.
"""

import json
import re

import pandas as pd
import pytest

from acp_flower.apps import server_app
from acp_flower.apps.server_app import run_server
from acp_flower.config import ExperimentConfig
from acp_flower.metrics import TIMING_COLUMNS
from acp_flower.runners.local import run_experiment
from acp_flower.runtime import ClientRoundError
from acp_flower.runtime.checkpoint import CHECKPOINT_FILE
from tests.integration.loopback import LoopbackGrid

pytestmark = pytest.mark.slow  # end-to-end runs (see the fast tier in README.md)

TINY = dict(dataset="synthetic", data_dir="", train_subset=192, test_subset=64, num_clients=3, rounds=2,
            batch_size=32, eval_batch_size=64, optimizer="adam", lr=1e-3, codec="acp", transport="flower")


def _cfg(tmp_path, **changes) -> ExperimentConfig:
    return ExperimentConfig.from_dict({**TINY, "out_dir": str(tmp_path / "app"), **changes})


def _run_loopback(cfg: ExperimentConfig, **grid_kw) -> tuple[pd.DataFrame, dict, LoopbackGrid]:
    grid = LoopbackGrid(cfg, **grid_kw)
    try:
        run_server(grid, cfg)
    finally:
        grid.close()
    out = json.loads((pd.io.common.Path(cfg.out_dir) / "summary.json").read_text())
    return pd.read_csv(pd.io.common.Path(cfg.out_dir) / "metrics.csv"), out, grid


def _local(cfg: ExperimentConfig) -> pd.DataFrame:
    return run_experiment(cfg.replace(out_dir="", checkpoint=False, resume=False), None, progress=False)


@pytest.mark.parametrize("scheme,partition", [
    ("vanilla", "iid"), ("splitfed_v1", "iid"), ("splitfed_v2", "dirichlet"),
])
def test_flower_transport_equals_local_across_actor_moves(tmp_path, scheme, partition):
    # Prepare: 3 clients on 2 simulated actors; half of the messages change process
    cfg = _cfg(tmp_path, scheme=scheme, partition=partition, dirichlet_alpha=1.0)
    # Execute
    app, summary, grid = _run_loopback(cfg, num_actors=2, move_prob=0.5, seed=1)
    local = _local(cfg)
    # Assert: identical metrics (bytes, losses, accuracies), after real cross-process moves
    cols = [c for c in local.columns if c not in TIMING_COLUMNS]
    pd.testing.assert_frame_equal(app[cols], local[cols], check_exact=True, check_dtype=False)
    assert grid.moves > 0 and summary["exchange"]["resyncs"] > 0
    assert summary["status"] == "completed" and summary["failures"] == []


def test_every_message_in_a_fresh_process(tmp_path):
    # Prepare: every message changes process: each batch is a cache miss and a replay
    cfg = _cfg(tmp_path, scheme="splitfed_v2", rounds=1)
    # Execute
    app, summary, _ = _run_loopback(cfg, num_actors=2, move_prob=1.0)
    # Assert
    cols = ["bytes_up", "bytes_down", "train_loss", "test_accuracy"]
    pd.testing.assert_frame_equal(app[cols], _local(cfg)[cols], check_exact=True)
    steps = 3 * 2  # 3 clients x 2 batches of 32 (64 samples each)
    assert summary["exchange"]["resyncs"] == steps


def test_failing_client_skipped(tmp_path):
    # Prepare: client 1 raises in round 1; policy skip
    cfg = _cfg(tmp_path, scheme="splitfed_v2", fail_client=1, fail_round=1, on_client_error="skip")
    # Execute
    app, summary, _ = _run_loopback(cfg)
    # Assert: round 1 without client 1, round 2 with everyone; the failure is recorded
    assert app["clients"].tolist() == [2, 3]
    assert summary["status"] == "completed"
    [failure] = summary["failures"]
    assert (failure["server_round"], failure["client_id"]) == (1, 1)
    assert "failed on purpose" in failure["reason"]


@pytest.mark.parametrize("scheme", ["vanilla", "splitfed_v2"])
@pytest.mark.parametrize("kind", ["nan", "shape", "truncate"])
def test_corrupted_upload_skipped_like_the_local_runner(tmp_path, scheme, kind):
    # Prepare: client 1's first upload of round 1 is corrupted; the ServerApp's tail refuses it
    cfg = _cfg(tmp_path, scheme=scheme, fail_client=1, fail_round=1, fail_kind=kind, on_client_error="skip")
    # Execute
    app, summary, _ = _run_loopback(cfg, num_actors=2, move_prob=0.5, seed=1)
    local = _local(cfg)
    # Assert: both drivers skip the same client for the same round, with the same results
    cols = [c for c in local.columns if c not in TIMING_COLUMNS]
    pd.testing.assert_frame_equal(app[cols], local[cols], check_exact=True, check_dtype=False)
    assert app["clients"].tolist() == [2, 3]
    [failure] = summary["failures"]
    assert (failure["server_round"], failure["client_id"]) == (1, 1)
    assert failure["reason"].startswith("round 1, client 1, batch 0: ")


def test_divergence_stops_both_drivers_with_the_same_error(tmp_path):
    cfg = _cfg(tmp_path, scheme="vanilla", optimizer="sgd", lr=1e12)
    with pytest.raises(ClientRoundError) as app_error:
        _run_loopback(cfg)
    with pytest.raises(ClientRoundError) as local_error:
        _local(cfg)
    assert str(app_error.value) == str(local_error.value)
    assert re.search(r"round 1, client 0, batch \d+: non-finite", str(app_error.value))


class _Crash(Exception):
    """Stands in for the ServerApp process dying right after a checkpoint."""


def _crash_after_checkpoint(monkeypatch, server_round: int) -> None:
    save = server_app.save_checkpoint

    def save_then_crash(out_dir, cfg, ckpt):
        save(out_dir, cfg, ckpt)
        if ckpt.server_round == server_round:
            raise _Crash

    monkeypatch.setattr(server_app, "save_checkpoint", save_then_crash)


@pytest.mark.parametrize("scheme", ["vanilla", "splitfed_v1", "splitfed_v2"])
def test_crashed_run_resumes_to_the_unbroken_metrics(tmp_path, monkeypatch, scheme):
    # Prepare: the ServerApp dies right after checkpointing round 1 of 3
    cfg = _cfg(tmp_path, scheme=scheme, rounds=3, checkpoint=True)
    _crash_after_checkpoint(monkeypatch, 1)
    with pytest.raises(_Crash):
        _run_loopback(cfg, num_actors=2, move_prob=0.5, seed=1)
    monkeypatch.undo()
    assert (tmp_path / "app" / CHECKPOINT_FILE).exists()
    # Execute: a new simulation (fresh contexts and caches) resumes from the checkpoint
    app, summary, _ = _run_loopback(cfg.replace(resume=True), num_actors=2, move_prob=0.5, seed=2)
    # Assert: the whole run's metrics equal an unbroken run's; the checkpoint is gone
    local = _local(cfg)
    cols = [c for c in local.columns if c not in TIMING_COLUMNS]
    pd.testing.assert_frame_equal(app[cols], local[cols], check_exact=True, check_dtype=False)
    assert summary["status"] == "completed" and summary["resumed_after_round"] == 1
    assert not (tmp_path / "app" / CHECKPOINT_FILE).exists()


def test_resume_refuses_a_completed_run_and_a_changed_config(tmp_path, monkeypatch):
    done = _cfg(tmp_path, rounds=1)
    _run_loopback(done)
    with pytest.raises(FileExistsError, match="holds a finished run; nothing to resume"):
        _run_loopback(done.replace(resume=True))
    crashed = _cfg(tmp_path, rounds=2, checkpoint=True, out_dir=str(tmp_path / "b"))
    _crash_after_checkpoint(monkeypatch, 1)
    with pytest.raises(_Crash):
        _run_loopback(crashed)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"was made with a different config \(keys \['lr'\]\)"):
        _run_loopback(crashed.replace(resume=True, lr=0.5))


def test_failing_client_stops_run(tmp_path):
    # Prepare
    cfg = _cfg(tmp_path, scheme="vanilla", fail_client=2, fail_round=2, on_client_error="stop")
    # Execute
    with pytest.raises(ClientRoundError, match="client 2 failed in round 2"):
        _run_loopback(cfg)
    # Assert: round 1 recorded, then a failed summary naming the client
    summary = json.loads((tmp_path / "app" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["rounds_completed"] == 1
    assert summary["failures"][0]["client_id"] == 2 and "client 2 failed" in summary["reason"]


def test_supernode_count_must_match(tmp_path):
    cfg = _cfg(tmp_path)
    grid = LoopbackGrid(cfg)
    grid.node_ids = grid.node_ids[:2]
    with pytest.raises(ValueError, match="2 SuperNodes but num-clients=3"):
        run_server(grid, cfg)
    grid.close()


def test_stop_accuracy_ends_the_app_run_where_the_local_run_ends(tmp_path):
    # Prepare: stop at round 2's accuracy of a 3-round local run (above round 1's here)
    full = _local(_cfg(tmp_path, rounds=3))
    target = float(full["test_accuracy"].iloc[1])
    cfg = _cfg(tmp_path, rounds=3, stop_accuracy=target)
    # Execute
    app, summary, _ = _run_loopback(cfg)
    # Assert: the app stops after the same round as the local runner, with the same rows
    stop_round = int(full.index[full["test_accuracy"] >= target][0]) + 1
    local = _local(cfg)
    assert len(app) == len(local) == stop_round == summary["rounds_completed"]
    assert summary["stopped_early"] is (stop_round < 3) and summary["status"] == "completed"
    cols = ["bytes_up", "train_loss", "test_accuracy"]
    pd.testing.assert_frame_equal(app[cols], local[cols], check_exact=True, check_dtype=False)


def test_bn_recalibrated_evaluation_equals_local(tmp_path):
    # Prepare: the ServerApp builds its evaluator (with the calibration set) like the local runner
    cfg = _cfg(tmp_path, eval_bn_recalibration=64)
    # Execute
    app, _, _ = _run_loopback(cfg)
    # Assert
    cols = ["bytes_up", "train_loss", "test_accuracy", "test_loss"]
    pd.testing.assert_frame_equal(app[cols], _local(cfg)[cols], check_exact=True, check_dtype=False)
    assert not app["test_loss"].equals(_local(cfg.replace(eval_bn_recalibration=0))["test_loss"])


@pytest.mark.parametrize("changes", [
    dict(scheme="vanilla", exchange="decoupled", aux_head="linear"),
    dict(scheme="splitfed_v2", exchange="decoupled", codec="quantize", act_dropout=0.3),
    dict(scheme="splitfed_v1", codec="standard", act_dropout=0.5, down_quantize_bits=4, cut_layer=5,
         head_prune_sparsity=0.5, head_prune_start_round=1, head_prune_end_round=2),
], ids=["decoupled", "decoupled-dropout-v2", "fedsl-v1"])
def test_other_exchanges_and_lightweight_options_equal_local(tmp_path, changes):
    # Prepare: messages move between 2 simulated actors (replays of rounds included)
    cfg = _cfg(tmp_path, **changes)
    # Execute
    app, summary, _ = _run_loopback(cfg, num_actors=2, move_prob=0.5, seed=2)
    local = _local(cfg)
    # Assert: every column but the wall times, exactly
    cols = [c for c in local.columns if c not in TIMING_COLUMNS]
    pd.testing.assert_frame_equal(app[cols], local[cols], check_exact=True, check_dtype=False)
    assert summary["status"] == "completed"
    if changes.get("exchange") == "decoupled":
        assert (app["bytes_down"] == 0).all() and app["aux_test_accuracy"].notna().all()
