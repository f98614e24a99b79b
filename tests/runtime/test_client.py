"""The client runtime's round: which mini-batches it trains on."""

from __future__ import annotations

import numpy as np
import pytest

from acp_flower.config import ExperimentConfig
from acp_flower.data import prepare_data
from acp_flower.runtime import ClientTask, TailSlots, build_client, initial_states, resolve_device


@pytest.mark.parametrize("model, extra, trained", [
    ("resnet18", {}, 8),  # BatchNorm: the trailing one-sample batch is left out (it would raise)
    ("vit_tiny", dict(vit_embed_dim=48, vit_depth=2, vit_heads=3, vit_patch_size=8, cut_layer=1), 9),  # LayerNorm: kept
])
def test_trailing_single_sample_batch(model, extra, trained):
    cfg = ExperimentConfig(dataset="synthetic", num_clients=1, batch_size=4, optimizer="adam", lr=1e-3,
                           codec="standard", model=model, device="cpu", **extra)
    data, device = prepare_data(cfg), resolve_device("cpu")
    client = build_client(cfg, 0, data.train_set, np.arange(9), device)  # batches of 4, 4 and 1
    tails = TailSlots(cfg, device)
    head, tail = initial_states(cfg)
    tails.set(0, tail)
    result = client.train(ClientTask(0, 1, head, 0), lambda up: tails.step(0, up))
    assert result.num_examples == trained
    assert result.traffic.steps == client.steps_per_round == (2 if trained == 8 else 3)
