"""Peak step memory per side: measured, repeatable, and larger for bigger batches."""

import torch

from acp_flower.config import ExperimentConfig
from acp_flower.data import prepare_data
from acp_flower.runtime.memory import measure_step_memory

CPU = torch.device("cpu")


def _measure(**changes):
    cfg = ExperimentConfig(**{"dataset": "synthetic", "train_subset": 256, "num_clients": 2, "batch_size": 64,
                              "optimizer": "adam", **changes})
    return measure_step_memory(cfg, prepare_data(cfg), CPU)


def test_peaks_are_repeatable_and_cover_the_held_state():
    state = torch.get_rng_state()
    a, b = _measure(), _measure()
    assert torch.equal(state, torch.get_rng_state())  # draws nothing from the global RNG
    assert a == b
    assert a["client_peak_bytes"] > a["client_held_bytes"] > 0
    # the server holds ResNet-18's tail (~11M parameters) and Adam's two moments of it
    assert a["server_held_bytes"] > 3 * 11_000_000 * 4
    assert a["server_peak_bytes"] > a["server_held_bytes"] and "profiler" in a["method"]


def test_activations_grow_with_the_batch():
    small, large = _measure(batch_size=32), _measure(batch_size=128)
    transient = lambda m, side: m[f"{side}_peak_bytes"] - m[f"{side}_held_bytes"]  # noqa: E731
    # the client's step is activations only: about proportional to the batch
    assert 3.0 < transient(large, "client") / transient(small, "client") < 5.0
    # the server's also allocates the tail's gradients (~44 MB, whatever the batch)
    assert transient(small, "server") > 11_000_000 * 4
    assert transient(large, "server") > transient(small, "server") + 10_000_000
