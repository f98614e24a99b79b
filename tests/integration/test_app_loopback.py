"""ServerApp + ClientApp logic of the ``flower`` transport, in process (no Flower engine).

``LoopbackGrid`` stands in for the simulation engine: Contexts persist per node, and
each message may land in another simulated actor process (separate caches), which is
what forces the ClientApp to rebuild its state from ``context.state`` and to replay a
round after a cache miss. Results must equal the local runner's exactly: the same
computations run in the same process, so there is no source of float differences.
"""

import json

import pandas as pd
import pytest

from acp_flower.apps.executor import ClientRoundError
from acp_flower.apps.server_app import run_server
from acp_flower.config import ExperimentConfig
from acp_flower.metrics import TIMING_COLUMNS
from acp_flower.runners.local import run_experiment
from tests.integration.loopback import LoopbackGrid

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
    return run_experiment(cfg.replace(out_dir=""), None, progress=False)


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
