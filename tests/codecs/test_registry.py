"""Every registered codec: wire round trip, gradient mirroring, error bound, exact byte counts."""

import math

import pytest
import torch

from acp_flower.codecs import build_codec, get_codec, list_codecs, register_codec
from acp_flower.codecs.base import Codec
from acp_flower.config import ExperimentConfig
from acp_flower.wire import from_bytes, ideal_bits, to_bytes

SHAPE = (128, 64, 8, 8)
HEADER = 4 + 3 + 4 * 4  # magic, version/flags/ndim, 4 x u32 shape
LABELS = 1 + 128  # dtype code + uint8 labels


FEATURE_MAP_CODECS = [c for c in list_codecs() if not get_codec(c).needs_attention]
"""Codecs for any smashed data; ADC (which needs a ViT head's attention) is tested in test_adc.py."""


def _batch():
    gen = torch.Generator().manual_seed(0)
    return torch.relu(torch.randn(SHAPE, generator=gen)), torch.randint(0, 10, (128,), generator=gen)


def _configs():
    return {
        "standard": ExperimentConfig(codec="standard"),
        # 19 of 64 channels kept: round(0.703125 * 64) = 45 pruned
        "acp": ExperimentConfig(codec="acp", acp_ratio="fixed", p_base=45 / 64),
        "randtopk": ExperimentConfig(codec="randtopk", randtopk_k=0.25, randtopk_alpha=0.1),
        "quantize": ExperimentConfig(codec="quantize", quantize_bits=8),
    }


def test_registry_lists_all_and_rejects_duplicates_and_unknown():
    assert list_codecs() == ["acp", "adc", "quantize", "randtopk", "standard"]
    with pytest.raises(ValueError, match="already registered"):
        register_codec("acp")(type("X", (Codec,), {"encode": lambda *a, **k: None}))
    with pytest.raises(ValueError, match="allowed: acp, adc, quantize, randtopk, standard"):
        get_codec("nope")


@pytest.mark.parametrize("name", FEATURE_MAP_CODECS)
def test_round_trip_through_bytes(name):
    # Prepare
    x, y = _batch()
    codec = build_codec(_configs()[name], total_steps=10)
    # Execute
    payload = codec.encode(x, y)
    decoded = codec.decode(from_bytes(to_bytes(payload)))
    # Assert: what the server reconstructs equals the codec's own view of x
    assert decoded.shape == x.shape
    assert torch.equal(decoded, payload.to_dense())
    if name == "standard":
        assert torch.equal(decoded, x)
    elif name == "acp":
        mask = payload.channel_mask
        assert int(mask.sum()) == 19
        assert torch.equal(decoded[:, mask], x[:, mask]) and torch.all(decoded[:, ~mask] == 0)
    elif name == "randtopk":
        flat, dec = x.reshape(128, -1), decoded.reshape(128, -1)
        sent = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, payload.indices, True)
        assert torch.equal(dec[sent], flat[sent]) and torch.all(dec[~sent] == 0)
        assert int(sent[0].sum()) == 1024
        # the top (k - alpha k) magnitudes are always sent
        top = flat.abs().topk(1024 - round(0.1 * 1024), dim=1).indices
        assert sent.gather(1, top).all()
    else:
        step = (x.max() - x.min()) / 255
        assert (decoded - x).abs().max() <= step / 2 + 1e-6


@pytest.mark.parametrize("name", FEATURE_MAP_CODECS)
def test_gradient_uses_same_mask_or_indices(name):
    x, y = _batch()
    codec = build_codec(_configs()[name], total_steps=10)
    payload = from_bytes(to_bytes(codec.encode(x, y)))
    grad = torch.randn(SHAPE)
    back = codec.decode_grad(from_bytes(to_bytes(codec.encode_grad(grad, payload))))
    if name == "acp":
        mask = payload.channel_mask
        assert torch.equal(back[:, mask], grad[:, mask]) and torch.all(back[:, ~mask] == 0)
    elif name == "randtopk":
        g, b = grad.reshape(128, -1), back.reshape(128, -1)
        assert torch.equal(b.gather(1, payload.indices), g.gather(1, payload.indices))
        assert int((b != 0).sum()) <= 128 * 1024
    elif name == "quantize":
        assert (back - grad).abs().max() <= (grad.max() - grad.min()) / 255 / 2 + 1e-6
    else:
        assert torch.equal(back, grad)


def test_exact_byte_counts_for_known_shapes():
    x, y = _batch()
    d = 64 * 8 * 8
    expected_up = {
        "standard": HEADER + LABELS + 128 * d * 4,
        "acp": HEADER + 8 + LABELS + 128 * 19 * 64 * 4,  # 8-byte mask for 64 channels
        "randtopk": HEADER + 5 + 128 * 1024 * 2 + LABELS + 128 * 1024 * 4,  # uint16 indices
        "quantize": HEADER + LABELS + 5 + 8 + 128 * d,  # 8-bit codes, one scale/offset
    }
    expected_bits = {
        "standard": 128 * d * 32,
        "acp": 128 * 19 * 64 * 32 + 64,
        "randtopk": 128 * 1024 * (32 + 12),
        "quantize": 128 * d * 8 + 64,
    }
    for name, cfg in _configs().items():
        codec = build_codec(cfg, total_steps=10)
        payload = codec.encode(x, y)
        from dataclasses import replace
        payload = replace(payload, labels=y)
        assert len(to_bytes(payload)) == expected_up[name], name
        assert ideal_bits(payload, num_classes=10) == expected_bits[name] + 128 * 4, name
    assert expected_up["acp"] == 622752  # the example: 19 of 64 channels of 128x64x8x8


@pytest.mark.parametrize("bits", [1, 3, 4, 8, 12, 16])
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_quantize_bits_and_granularity(bits, granularity):
    x = torch.randn(4, 6, 3, 3) * torch.arange(1, 7).view(1, 6, 1, 1)
    codec = build_codec(ExperimentConfig(codec="quantize", quantize_bits=bits, quantize_granularity=granularity))
    payload = codec.encode(x)
    data = to_bytes(payload)
    groups = 6 if granularity == "channel" else 1
    assert len(data) == 4 + 3 + 16 + 5 + 8 * groups + math.ceil(x.numel() * bits / 8)
    decoded = from_bytes(data).to_dense()
    if granularity == "channel":
        step = (x.amax(dim=(0, 2, 3)) - x.amin(dim=(0, 2, 3))) / (2**bits - 1)
        assert ((decoded - x).abs() <= step.view(1, 6, 1, 1) / 2 + 1e-5).all()
    else:
        assert (decoded - x).abs().max() <= (x.max() - x.min()) / (2**bits - 1) / 2 + 1e-5
