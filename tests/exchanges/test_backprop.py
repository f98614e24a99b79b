"""Backprop exchange: the gradient goes back like the upload, or quantized to down_quantize_bits."""

import math

import pytest
import torch

from acp_flower.config import ExperimentConfig
from acp_flower.data import prepare_data
from acp_flower.runners.local import run_experiment
from acp_flower.runtime import build_client, build_server, initial_states, resolve_device
from acp_flower.wire import from_bytes

TINY = dict(dataset="synthetic", train_subset=64, test_subset=32, num_clients=1, rounds=1, batch_size=32,
            eval_batch_size=32, optimizer="adam", lr=1e-3)
HEADER = 4 + 3 + 4 * 4


def _one_exchange(**changes):
    """Client 0's first batch through a fresh server: (up payload, reply bytes, tail input grad)."""
    cfg = ExperimentConfig.from_dict({**TINY, **changes})
    data = prepare_data(cfg)
    device = resolve_device("cpu")
    client = build_client(cfg, 0, data.train_set, data.partitions[0], device)
    server = build_server(cfg, device)
    server.set_state(initial_states(cfg)[1])
    replies = []
    x, y = client._next(client._batches(1, 0))
    client.step(x, y, lambda up: replies.append((from_bytes(up), server.step(up))) or replies[-1][1])
    return replies[0]


@pytest.mark.parametrize("bits", [1, 4, 8, 16])
@pytest.mark.slow
def test_down_quantized_gradient_exact_bytes(bits):
    # Prepare / Execute: standard codec up (float32), the gradient back at `bits` bits
    up, down = _one_exchange(codec="standard", down_quantize_bits=bits)
    grad = from_bytes(down)
    # Assert: header + one scale/offset + bit-packed codes, no labels
    n = 32 * 64 * 8 * 8
    assert len(down) == HEADER + 5 + 8 + math.ceil(n * bits / 8)
    assert grad.bits == bits and grad.shape == up.shape


@pytest.mark.slow
def test_down_quantization_error_is_bounded_and_follows_the_upload_layout():
    # float32 reference gradient (same seed, same batch, same initial weights)
    _, exact = _one_exchange(codec="acp", acp_ratio="fixed")
    _, quant = _one_exchange(codec="acp", acp_ratio="fixed", down_quantize_bits=8)
    g, q = from_bytes(exact), from_bytes(quant)
    assert torch.equal(g.channel_mask, q.channel_mask)  # same kept channels
    step = (g.values.max() - g.values.min()) / 255
    assert (q.to_dense() - g.to_dense()).abs().max() <= step / 2 + 1e-7


@pytest.mark.slow
def test_down_quantization_reduces_down_bytes_in_a_run():
    base = run_experiment(ExperimentConfig.from_dict({**TINY, "codec": "standard"}), None, progress=False)
    q8 = run_experiment(ExperimentConfig.from_dict({**TINY, "codec": "standard", "down_quantize_bits": 8}),
                        None, progress=False)
    assert q8["bytes_up"].tolist() == base["bytes_up"].tolist()
    # 2 batches: float32 values 4 B -> 1 B each, plus 5 + 8 bytes of quantization header
    n = 32 * 64 * 8 * 8
    assert base["bytes_down"].iloc[0] - q8["bytes_down"].iloc[0] == 2 * (3 * n - 13)


def test_bad_down_quantize_bits():
    with pytest.raises(ValueError, match=r"'down_quantize_bits'.*0..16"):
        ExperimentConfig(down_quantize_bits=17)
