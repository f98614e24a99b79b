"""Decoupled SL: nothing travels back, the auxiliary loss trains the head, the server the tail."""

import pytest
import torch

from acp_flower.config import ExperimentConfig
from acp_flower.data import prepare_data
from acp_flower.exchanges.decoupled import AUX_HEADS, AuxClientModel
from acp_flower.runners.local import run_experiment
from acp_flower.runtime import build_client, build_server, initial_states, resolve_device

TINY = dict(dataset="synthetic", train_subset=512, test_subset=128, num_clients=2, rounds=3, batch_size=32,
            eval_batch_size=128, optimizer="adam", lr=1e-3, exchange="decoupled")


@pytest.mark.parametrize("aux_head", sorted(AUX_HEADS))
@pytest.mark.slow
def test_no_bytes_down_and_the_auxiliary_loss_falls(aux_head):
    # Execute
    frame = run_experiment(ExperimentConfig.from_dict({**TINY, "aux_head": aux_head}), None, progress=False)
    # Assert: 16 uploads a round, no reply; both losses fall; both accuracies are reported
    assert (frame["bytes_down"] == 0).all() and (frame["ideal_bits_down"] == 0).all()
    assert (frame["exchanges"] == 16).all() and (frame["bytes_up"] > 0).all()
    assert frame["aux_train_loss"].is_monotonic_decreasing and frame["train_loss"].is_monotonic_decreasing
    assert frame["aux_test_accuracy"].notna().all() and frame["test_accuracy"].iloc[-1] > 0.2  # chance 0.1


@pytest.mark.slow
def test_the_backprop_runs_have_no_auxiliary_columns():
    frame = run_experiment(ExperimentConfig.from_dict({**TINY, "exchange": "backprop", "rounds": 1}), None,
                           progress=False)
    assert frame[["aux_test_accuracy", "aux_train_loss"]].isna().all().all()


@pytest.mark.slow
def test_client_model_holds_head_and_aux_and_the_server_gets_no_graph():
    # Prepare
    cfg = ExperimentConfig.from_dict({**TINY, "num_clients": 1, "train_subset": 32})
    data = prepare_data(cfg)
    cpu = resolve_device("cpu")
    client = build_client(cfg, 0, data.train_set, data.partitions[0], cpu)
    server = build_server(cfg, cpu)
    head0, tail0 = initial_states(cfg)
    server.set_state(tail0)
    x, y = client._next(client._batches(1, 0))
    # Execute
    traffic = client.step(x, y, server.step)
    # Assert: the initial client state is head + aux; both sides moved; nothing came back
    assert isinstance(client.model, AuxClientModel)
    assert any(k.startswith("aux.") for k in head0) and any(k.startswith("head.") for k in head0)
    state = client.model.state_dict()
    assert not torch.equal(state["head.0.weight"], head0["head.0.weight"])
    assert not torch.equal(state["aux.0.weight"], head0["aux.0.weight"])
    assert not torch.equal(server.get_state()["0.0.conv1.weight"], tail0["0.0.conv1.weight"])
    assert traffic.bytes_down == 0 and client.local_stats.samples == 32


def test_unknown_aux_head_names_the_key():
    with pytest.raises(ValueError, match=r"'aux_head'.*allowed: conv_mlp, linear"):
        ExperimentConfig(exchange="decoupled", aux_head="mlp")
