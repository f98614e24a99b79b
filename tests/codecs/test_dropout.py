"""Activation dropout: only the kept values travel, with the mask's seed; gradients on the same elements."""

import math
import struct

import pytest
import torch

from acp_flower.codecs import build_codec
from acp_flower.config import ExperimentConfig
from acp_flower.runners.local import run_experiment
from acp_flower.wire import Dropout, PayloadError, drop, from_bytes, ideal_bits, like, to_bytes

HEADER = 4 + 3 + 4 * 4
DROP_SECTION = 8 + 8 + 1
CONFIGS = {
    "standard": ExperimentConfig(codec="standard"),
    "acp": ExperimentConfig(codec="acp", acp_ratio="fixed", p_min=0.5, p_base=0.5),
    "randtopk": ExperimentConfig(codec="randtopk", randtopk_k=0.25),
    "quantize": ExperimentConfig(codec="quantize", quantize_bits=6, quantize_granularity="channel"),
}


def _batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(16, 8, 4, 4, generator=gen) + 3.0, torch.randint(0, 10, (16,), generator=gen)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("rescale", [True, False])
def test_round_trip_exact_bytes_and_gradient_on_the_same_elements(name, rescale):
    # Prepare
    x, y = _batch()  # all values > 0: a zero in the reconstruction means "not sent"
    payload = build_codec(CONFIGS[name], total_steps=3).encode(x, y)
    dropout = Dropout(seed=1234, p=0.4, rescale=rescale)
    # Execute
    dropped = drop(payload, dropout)
    data = to_bytes(dropped)
    received = from_bytes(data)
    # Assert: exactly the kept values travel, plus 17 bytes (seed, p, flag)
    keep = dropout.keep(payload.values.numel())
    assert dropped.values.numel() == int(keep.sum()) and 0.45 < keep.float().mean() < 0.75
    value_bytes = (lambda n: math.ceil(n * payload.bits / 8)) if payload.bits else (lambda n: 4 * n)
    saved = value_bytes(payload.values.numel()) - value_bytes(int(keep.sum()))
    assert len(data) == len(to_bytes(payload)) - saved + DROP_SECTION
    assert ideal_bits(received, 10) == ideal_bits(payload, 10) - (payload.bits or 32) * int((~keep).sum()) + 129
    # the receiver rebuilds the codec's view on the kept elements, scaled by 1/(1-p) if asked
    factor = 1 / 0.6 if rescale else 1.0
    full, dense = payload.to_dense(), received.to_dense()
    sent = dense != 0
    assert int(sent.sum()) == int(keep.sum())
    assert torch.allclose(dense[sent], full[sent] * factor, rtol=1e-6)
    # the gradient comes back on the same elements, with the same factor (chain rule)
    grad = torch.randn(x.shape)
    back = from_bytes(to_bytes(like(received, grad))).to_dense()
    assert torch.equal(back != 0, sent) or payload.bits  # a quantized zero may land anywhere
    if not payload.bits:
        assert torch.allclose(back[sent], grad[sent] * factor, rtol=1e-6)


def test_the_mask_is_drawn_from_the_seed_alone():
    a, b = Dropout(7, 0.5).keep(1000), Dropout(7, 0.5).keep(1000)
    assert torch.equal(a, b) and not torch.equal(a, Dropout(8, 0.5).keep(1000))


def test_corrupt_dropout_sections_are_refused():
    x, y = _batch()
    payload = drop(build_codec(CONFIGS["standard"]).encode(x, y), Dropout(5, 0.3))
    data = bytearray(to_bytes(payload))
    with pytest.raises(PayloadError, match="truncated|trailing"):
        from_bytes(bytes(data[:-4]))
    offset = HEADER + 8  # the dropout section follows the header: seed u64, then p f64
    data[offset:offset + 8] = struct.pack("<d", 1.5)
    with pytest.raises(PayloadError, match="invalid dropout section"):
        from_bytes(bytes(data))
    with pytest.raises(PayloadError, match="already has dropout"):
        drop(payload, Dropout(1, 0.1))


@pytest.mark.slow
def test_in_a_run_dropout_halves_the_values_and_replays_identically(tmp_path):
    tiny = dict(dataset="synthetic", train_subset=128, test_subset=64, num_clients=2, rounds=2, batch_size=32,
                eval_batch_size=64, optimizer="adam", lr=1e-3, codec="standard")
    base = run_experiment(ExperimentConfig.from_dict(tiny), None, progress=False)
    cfg = ExperimentConfig.from_dict({**tiny, "act_dropout": 0.5})
    a = run_experiment(cfg, None, progress=False)
    b = run_experiment(cfg, None, progress=False)
    assert a["bytes_up"].tolist() == b["bytes_up"].tolist() and a["train_loss"].tolist() == b["train_loss"].tolist()
    assert 0.45 < a["bytes_up"].sum() / base["bytes_up"].sum() < 0.55
    assert a["mean_prune_ratio"].between(0.45, 0.55).all()


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_bad_act_dropout(p):
    with pytest.raises(ValueError, match=r"'act_dropout'.*\[0, 1\)"):
        ExperimentConfig(act_dropout=p)
