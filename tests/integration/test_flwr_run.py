"""End to end: ``flwr run .`` (through ``acp-flower simulate``) on both transports.

Equivalence with the local runner: the bytes of every round must be identical (the same
payloads cross the wire whatever carries them). Losses and accuracies are expected to be
identical too, as every process runs the same operations on the same inputs with one
torch thread; the tolerance (relative 1e-5, one test sample of accuracy) only allows for
a different float summation order between processes, which we have not observed.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from acp_flower.metrics import TIMING_COLUMNS
from acp_flower.runners.local import run_experiment
from acp_flower.runtime.checkpoint import CHECKPOINT_FILE
from tests.integration.flwr_runs import RunPool, processes_mentioning

pytestmark = pytest.mark.slow

BYTES = ["bytes_up", "bytes_down", "ideal_bits_up", "ideal_bits_down", "clients", "sampled", "exchanges", "comm_s",
         "client_params_nonzero", "client_flops_sparse"]


def pytest_collection_names(session) -> list[str]:
    return [m.args[0] for item in session.items for m in item.iter_markers("flwr_run")]


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    pool = RunPool(tmp_path_factory.mktemp("flwr"), pytest_collection_names(request.session))
    yield pool
    pool.close()


def _assert_same_as_local(run) -> None:
    assert run.returncode == 0, run.output[-3000:]
    app = run.metrics
    local = run_experiment(run.cfg.replace(out_dir=""), None, progress=False)
    pd.testing.assert_frame_equal(app[BYTES], local[BYTES], check_exact=True, check_dtype=False)
    for col in ("train_loss", "test_loss", "aux_train_loss", "aux_test_loss"):
        assert app[col].tolist() == pytest.approx(local[col].tolist(), rel=1e-5, nan_ok=True), col
    one_sample = 1.0 / run.cfg.test_subset
    assert (app["test_accuracy"] - local["test_accuracy"]).abs().max() <= one_sample + 1e-9
    summary = run.summary
    assert summary["status"] == "completed" and summary["failures"] == []
    assert not processes_mentioning(str(run.flwr_home)), "a SuperLink or simulation process was left running"


@pytest.mark.flwr_run("ray_v1")
def test_ray_transport_parallel_clients_equal_local(runs):
    run = runs.get("ray_v1")
    _assert_same_as_local(run)
    # 3 clients on 2 client actors, in parallel: both actors served clients, and the
    # per-client state (Adam moments, ACP history in context.state) carried over rounds
    pids = run.summary["exchange"]["actor_pids"]
    assert len(set().union(*pids.values())) == 2


@pytest.mark.flwr_run("ray_v2_turns")
def test_ray_transport_round_robin_tail_equals_local(runs):
    run = runs.get("ray_v2_turns")
    _assert_same_as_local(run)
    # 3 client actors: one round message per client, the tail actor orders the batches
    assert run.summary["exchange"]["messages"] == 3 * run.cfg.rounds


@pytest.mark.flwr_run("flower_v2")
def test_flower_transport_per_batch_equals_local(runs):
    run = runs.get("flower_v2")
    _assert_same_as_local(run)
    exchange = run.summary["exchange"]
    steps = int(run.metrics["bytes_up"].gt(0).sum())  # rounds with traffic
    assert steps == run.cfg.rounds
    assert exchange["messages"] > 3 * run.cfg.rounds  # one message per mini-batch (+1 per client)


@pytest.mark.flwr_run("ray_decoupled")
def test_ray_transport_decoupled_equals_local(runs):
    run = runs.get("ray_decoupled")
    _assert_same_as_local(run)
    assert (run.metrics["bytes_down"] == 0).all() and run.metrics["aux_test_accuracy"].notna().all()


@pytest.mark.flwr_run("flower_fedsl")
def test_flower_transport_lightweight_fedsl_equals_local(runs):
    run = runs.get("flower_fedsl")
    _assert_same_as_local(run)
    metrics = run.metrics
    assert (metrics["client_params_nonzero"] < metrics["client_params"]).all()
    assert metrics["mean_prune_ratio"].between(0.4, 0.6).all()  # half of the values dropped


@pytest.mark.flwr_run("ray_vit_adc")
def test_ray_transport_vit_adc_equals_local(runs):
    run = runs.get("ray_vit_adc")
    _assert_same_as_local(run)
    # half the batch merged, 5 of 17 tokens: about 0.5 * 5 / 17 of the values travel
    assert run.metrics["mean_prune_ratio"].between(0.8, 0.9).all()


@pytest.mark.flwr_run("flower_vit_adc")
def test_flower_transport_vit_adc_equals_local(runs):
    run = runs.get("flower_vit_adc")
    _assert_same_as_local(run)
    assert run.metrics["mean_prune_ratio"].between(0.9, 1.0).all()


@pytest.mark.flwr_run("ray_sampled")
def test_ray_transport_samples_the_clients_of_the_local_runner(runs):
    run = runs.get("ray_sampled")
    _assert_same_as_local(run)  # same bytes: the same 2 of 4 clients, in the same order
    assert run.metrics["sampled"].tolist() == [2, 2] and run.metrics["clients"].tolist() == [2, 2]


@pytest.mark.flwr_run("flower_sampled_v1")
def test_flower_transport_samples_the_clients_of_the_local_runner(runs):
    run = runs.get("flower_sampled_v1")
    _assert_same_as_local(run)
    assert run.metrics["sampled"].tolist() == [2, 2] and run.metrics["clients"].tolist() == [2, 2]


@pytest.mark.flwr_run("ray_skip")
def test_failing_client_skipped_for_the_round(runs):
    run = runs.get("ray_skip")
    assert run.returncode == 0, run.output[-3000:]
    assert run.metrics["clients"].tolist() == [2, 3]
    assert run.summary["exchange"]["messages"] > 3 * run.cfg.rounds  # per-batch fallback
    summary = run.summary
    assert summary["status"] == "completed"
    [failure] = summary["failures"]
    assert (failure["server_round"], failure["client_id"]) == (1, 1)
    assert failure["reason"] == "client 1 failed on purpose in round 1 (fail_client)"


@pytest.mark.flwr_run("ray_nan_skip")
def test_nan_upload_skipped_for_the_round(runs):
    run = runs.get("ray_nan_skip")
    assert run.returncode == 0, run.output[-3000:]
    assert run.metrics["clients"].tolist() == [2, 3]
    assert run.metrics[["test_loss", "train_loss"]].notna().all().all()
    [failure] = run.summary["failures"]
    assert (failure["server_round"], failure["client_id"]) == (1, 1)
    assert failure["reason"] == "round 1, client 1, batch 0: payload values contain NaN or Inf"


@pytest.mark.flwr_run("flower_hang_skip")
def test_hanging_client_skipped_after_the_reply_timeout(runs):
    run = runs.get("flower_hang_skip")
    assert run.returncode == 0, run.output[-3000:]
    assert run.metrics["clients"].tolist() == [2, 3]
    [failure] = run.summary["failures"]
    assert (failure["server_round"], failure["client_id"], failure["reason"]) == (1, 0, "no reply (timeout)")
    assert run.metrics["wall_s"].iloc[0] >= 15.0  # the server waited the reply timeout, no longer


def _assert_resumed_equals_unbroken(resumed) -> None:
    run = resumed.run
    assert run.returncode == 0, run.output[-3000:]
    # killed during a round: at most that round is lost, nothing recorded past the checkpoint
    assert resumed.killed >= 3 and resumed.left_after_kill == []
    assert 1 <= resumed.checkpoint_round == resumed.rows_at_kill < run.cfg.rounds
    assert run.summary["resumed_after_round"] == resumed.checkpoint_round
    # the resumed metrics.csv is the unbroken run's (the local runner's: equal to flwr run's)
    local = run_experiment(run.cfg.replace(out_dir=""), None, progress=False)
    cols = [c for c in local.columns if c not in TIMING_COLUMNS]
    pd.testing.assert_frame_equal(run.metrics[cols], local[cols], check_exact=True, check_dtype=False)
    assert not (run.out_dir / CHECKPOINT_FILE).exists()  # removed once the run completed
    assert not processes_mentioning(str(run.flwr_home))


@pytest.mark.flwr_run("resume_ray")
def test_ray_run_killed_mid_round_resumes_to_the_unbroken_metrics(runs):
    _assert_resumed_equals_unbroken(runs.get("resume_ray"))


@pytest.mark.flwr_run("resume_flower")
def test_flower_run_killed_mid_round_resumes_to_the_unbroken_metrics(runs):
    _assert_resumed_equals_unbroken(runs.get("resume_flower"))


@pytest.mark.flwr_run("flower_stop")
def test_failing_client_stops_the_run(runs):
    run = runs.get("flower_stop")
    assert run.returncode == 1
    assert "finished:failed" in run.output and "client 2 failed in round 1" in run.output
    summary = run.summary
    assert summary["status"] == "failed" and summary["rounds_completed"] == 0
    assert summary["failures"][0]["client_id"] == 2
    assert not processes_mentioning(str(run.flwr_home))


@pytest.mark.flwr_run("bench")
def test_bench_transport_smoke(runs):
    proc = runs.get("bench")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ratios: ray/local=\d+\.\d+ flower/local=\d+\.\d+", last), last
    assert "bytes per round identical on all drivers" in proc.stdout
