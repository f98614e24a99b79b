"""ACP-SL: LCIS on a hand-computed example, the eq. (10) degeneracy, ablation options."""

import math

import pytest
import torch

from acp_flower.codecs import build_codec
from acp_flower.codecs.acp import lcis_components, lcis_instant_scores
from acp_flower.config import ExperimentConfig


def _hand_batch():
    # Prepare: 4 samples, 2 channels, 1x1 maps; labels 0,0,1,1.
    # channel 0 values 1,3 | 2,2 -> label means 2 | 2; channel 1 values 4,0 | 0,2 -> means 2 | 1.
    smashed = torch.tensor([[1.0, 4.0], [3.0, 0.0], [2.0, 0.0], [2.0, 2.0]]).view(4, 2, 1, 1)
    return smashed, torch.tensor([0, 0, 1, 1])


def test_lcis_hand_computed():
    smashed, labels = _hand_batch()
    # Execute
    s_intra, s_inter = lcis_components(smashed, labels)
    s_inst = lcis_instant_scores(smashed, labels)
    # Assert: ch0 intra ((1*2+3*2)/2 + (2*2+2*2)/2)/2 = 4, inter 2*2 = 4;
    #         ch1 intra ((4*2+0)/2 + (0+2*1)/2)/2 = 2.5, inter 2*1 = 2.
    assert s_intra.tolist() == pytest.approx([4.0, 2.5])
    assert s_inter.tolist() == pytest.approx([4.0, 2.0])
    # normalized: intra [8/13, 5/13], inter [2/3, 1/3] -> S_inst = [-2/39, 2/39]
    assert s_inst.tolist() == pytest.approx([-2 / 39, 2 / 39])


def test_lcis_frobenius_over_spatial_maps():
    smashed = torch.rand(16, 5, 3, 3)
    labels = torch.randint(0, 3, (16,))
    flat = smashed.reshape(16, 5, 9, 1)
    assert torch.allclose(lcis_instant_scores(smashed, labels), lcis_instant_scores(flat, labels))


def test_lcis_single_label_has_no_inter_term():
    smashed = torch.rand(8, 4, 2, 2)
    s_intra, s_inter = lcis_components(smashed, torch.zeros(8, dtype=torch.long))
    assert torch.all(s_inter == 0) and torch.all(s_intra > 0)
    assert torch.isfinite(lcis_instant_scores(smashed, torch.zeros(8, dtype=torch.long))).all()


def _run_steps(cfg, steps=20, batch=32, channels=16):
    codec = build_codec(cfg, total_steps=steps, seed=0)
    gen = torch.Generator().manual_seed(1)
    payloads = []
    for _ in range(steps):
        smashed = torch.relu(torch.randn(batch, channels, 4, 4, generator=gen))
        labels = torch.randint(0, 10, (batch,), generator=gen)
        payloads.append(codec.encode(smashed, labels))
    return codec, payloads


def test_literal_group_score_is_degenerate():
    # S_inst sums to zero over channels, so eq. (10)'s D_inst is 0 up to rounding.
    smashed = torch.relu(torch.randn(64, 32, 4, 4))
    labels = torch.randint(0, 10, (64,))
    s_inst = lcis_instant_scores(smashed, labels)
    assert abs(float(s_inst.sum())) < 1e-12 < float(s_inst.abs().mean())
    codec = build_codec(ExperimentConfig(acp_group_score="literal"), total_steps=50, seed=0)
    gen = torch.Generator().manual_seed(1)
    d_inst, w, ratios = [], [], []
    for _ in range(30):
        codec.encode(torch.relu(torch.randn(32, 16, 4, 4, generator=gen)), torch.randint(0, 10, (32,), generator=gen))
        d_inst.append(codec.last_d_inst), w.append(codec.last_w), ratios.append(codec.last_ratio)
    assert max(abs(d) for d in d_inst) < 1e-12  # rounding noise, not a score
    # W = D_hist / D_inst is a ratio of noise: its sign flips, so P_t jumps between the clamps.
    assert min(w) < 0 < max(w)
    assert {0.6, 0.8} <= {round(r, 6) for r in ratios}


def test_default_group_score_well_defined_and_bounded():
    cfg = ExperimentConfig()
    assert cfg.acp_group_score == "ratio"
    codec, payloads = _run_steps(cfg)
    assert codec.degenerate_steps == 0
    assert math.isfinite(codec.last_d_inst) and codec.last_d_inst > 0
    for p in payloads:
        pruned = 1 - int(p.channel_mask.sum()) / p.channel_mask.numel()
        assert cfg.p_min - 1 / 16 <= pruned <= cfg.p_max + 1 / 16  # rounding to whole channels
    assert cfg.p_min <= codec.last_ratio <= cfg.p_max


def test_adaptive_ratio_follows_group_score():
    # A batch separating labels better than the history (higher intra/inter) keeps more channels.
    codec = build_codec(ExperimentConfig(), total_steps=100, seed=0)
    gen = torch.Generator().manual_seed(3)
    labels = torch.arange(32) % 4
    for _ in range(5):
        codec.encode(torch.relu(torch.randn(32, 16, 4, 4, generator=gen)) + 1.0, labels)
    ratio_before = codec.last_ratio
    separated = torch.zeros(32, 16, 4, 4)
    separated[torch.arange(32), labels * 4] = 5.0  # each label lights its own channels
    codec.encode(separated + 0.01, labels)
    assert codec.last_ratio < ratio_before
    assert codec.last_ratio >= codec.p_min


@pytest.mark.parametrize("scoring", ["lcis", "l0", "random"])
@pytest.mark.parametrize("ratio", ["adaptive", "fixed", "random"])
def test_ablation_options_keep_ratio_bounds(scoring, ratio):
    cfg = ExperimentConfig(acp_scoring=scoring, acp_ratio=ratio)
    codec, payloads = _run_steps(cfg, steps=6)
    for p in payloads:
        kept = int(p.channel_mask.sum())
        assert round(cfg.p_min * 16) <= 16 - kept <= round(cfg.p_max * 16)
    if ratio == "fixed":
        assert all(int(p.channel_mask.sum()) == 16 - round(0.7 * 16) for p in payloads)


def test_lcis_keeps_informative_channels():
    # Channels 0-3 carry the label, the rest are label-independent noise of equal energy.
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 4
    smashed = torch.rand(64, 16, 2, 2, generator=gen)
    smashed[:, :4] = 0.05
    smashed[torch.arange(64), labels] = 1.0
    cfg = ExperimentConfig(acp_ratio="fixed", p_min=0.75, p_base=0.75, p_max=0.75)
    payload = build_codec(cfg, total_steps=10).encode(smashed, labels)
    assert payload.channel_mask[:4].all() and int(payload.channel_mask.sum()) == 4


def test_inference_needs_no_labels_and_uses_history():
    cfg = ExperimentConfig(acp_ratio="fixed")
    codec, _ = _run_steps(cfg, steps=5)
    state_before = {k: v.clone() for k, v in codec.state_dict().items()}
    payload = codec.encode(torch.rand(8, 16, 4, 4), train=False)
    expected = torch.argsort(codec.s_hist, descending=True, stable=True)[: 16 - round(0.7 * 16)]
    assert payload.channel_mask.nonzero().flatten().sort().values.tolist() == sorted(expected.tolist())
    for k, v in codec.state_dict().items():  # inference does not change the state
        assert torch.equal(v, state_before[k])


def test_eval_mask_all_keeps_every_channel_at_inference_only():
    cfg = ExperimentConfig(acp_ratio="fixed", acp_eval_mask="all")
    codec, _ = _run_steps(cfg, steps=5)
    x = torch.rand(8, 16, 4, 4)
    payload = codec.encode(x, train=False)
    assert payload.channel_mask.all() and torch.equal(payload.to_dense(), x)
    trained = codec.encode(x, torch.randint(0, 3, (8,)))  # training still prunes
    assert int(trained.channel_mask.sum()) == 16 - round(0.7 * 16)
    with pytest.raises(ValueError, match="acp_eval_mask"):
        ExperimentConfig(acp_eval_mask="labels")


def test_training_requires_labels():
    with pytest.raises(ValueError, match="labels"):
        build_codec(ExperimentConfig()).encode(torch.rand(2, 4, 2, 2))


def test_state_round_trip_continues_identically():
    cfg = ExperimentConfig(acp_ratio="random", acp_scoring="random")
    a, _ = _run_steps(cfg, steps=3)
    b = build_codec(cfg, total_steps=3, seed=99)
    b.load_state_dict(a.state_dict())
    x, y = torch.rand(8, 16, 4, 4), torch.randint(0, 3, (8,))
    pa, pb = a.encode(x, y), b.encode(x, y)
    assert torch.equal(pa.channel_mask, pb.channel_mask) and a.last_ratio == b.last_ratio
