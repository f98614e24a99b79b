"""Client-side pruning on a schedule, and the client cost (parameters, FLOPs) it changes."""

import pytest
import torch
from torch import nn

from acp_flower.config import ExperimentConfig
from acp_flower.models import HeadPruner, HeadPruningOptions, model_cost, split_resnet18
from acp_flower.models.pruning import global_magnitude_masks, prunable_weights
from acp_flower.runners.local import run_experiment


def test_schedule_ramps_linearly_then_holds():
    opts = HeadPruningOptions(head_prune_sparsity=0.6, head_prune_start_round=3, head_prune_end_round=5)
    assert [opts.sparsity(r) for r in range(1, 8)] == pytest.approx([0, 0, 0.2, 0.4, 0.6, 0.6, 0.6])
    assert HeadPruningOptions().sparsity(4) == 0.0


def test_global_magnitude_masks_prune_the_smallest_weights_across_layers():
    # Prepare: two layers whose weights are 1..6 and 7..10
    a, b = nn.Linear(3, 2, bias=False), nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        a.weight.copy_(torch.arange(1.0, 7.0).view(2, 3))
        b.weight.copy_(-torch.arange(7.0, 11.0).view(2, 2))
    # Execute
    masks = global_magnitude_masks([(a, "weight"), (b, "weight")], 0.5)
    # Assert: the 5 smallest magnitudes (1..5) go, wherever they are
    assert masks[0].tolist() == [[0, 0, 0], [0, 0, 1]] and masks[1].tolist() == [[1, 1], [1, 1]]


def test_a_round_keeps_pruned_weights_at_zero_and_leaves_plain_weights():
    # Prepare: the head after layer2 (channels-last, as in a run) and an optimizer
    head = split_resnet18(10, 3, cut_layer=6).head
    opt = torch.optim.Adam(head.parameters(), lr=0.1)
    pruner = HeadPruner(HeadPruningOptions(head_prune_sparsity=0.5))
    # Execute: prune, train a step, fold the masks in
    assert pruner.begin_round(head, 1) == 0.5
    head(torch.randn(4, 3, 32, 32)).square().mean().backward()
    opt.step()
    pruner.end_round(head)
    # Assert: exactly half of the conv weights are zero, the state dict is plain, the layout kept
    weights = [m.weight for m, _ in prunable_weights(head)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.5 * sum(w.numel() for w in weights))
    assert not any(k.endswith(("_orig", "_mask")) for k in head.state_dict())
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert {id(p) for p in head.parameters()} == {id(p) for g in opt.param_groups for p in g["params"]}


@pytest.mark.slow
def test_a_run_reaches_the_scheduled_sparsity_at_a_deeper_cut():
    # Prepare: cut after layer2; sparsity 0.25 in round 1, 0.5 from round 2
    cfg = ExperimentConfig(dataset="synthetic", train_subset=128, test_subset=64, num_clients=2, rounds=3,
                           batch_size=32, optimizer="adam", lr=1e-3, cut_layer=6, codec="standard",
                           head_prune_sparsity=0.5, head_prune_start_round=1, head_prune_end_round=2)
    head = split_resnet18(10, 3, cut_layer=6).head
    prunable = sum(m.weight.numel() for m, _ in prunable_weights(head))
    total = sum(p.numel() for p in head.parameters())
    # Execute
    frame = run_experiment(cfg, None, progress=False)
    # Assert: non-zero parameters = all - pruned conv weights (BatchNorm is not pruned)
    assert (frame["client_params"] == total).all()
    expected = [total - round(s * prunable) for s in (0.25, 0.5, 0.5)]
    assert frame["client_params_nonzero"].tolist() == expected
    # global magnitude pruning is not uniform across layers, whose FLOPs per weight differ
    ratio = (frame["client_flops_sparse"] / frame["client_flops"]).tolist()
    assert 0.65 < ratio[0] < 0.85 and 0.4 < ratio[1] < 0.6 and ratio[2] == pytest.approx(ratio[1], abs=0.02)


def test_flops_are_the_library_count_of_the_conv():
    # conv1 of ResNet-18 on one 32x32 RGB image: 64 x 16 x 16 outputs, 3 x 7 x 7 MACs each, 2 FLOPs a MAC
    head = split_resnet18(10, 3, cut_layer=4).head
    cost = model_cost(head, torch.zeros(1, 3, 32, 32))
    assert cost.flops == 2 * 64 * 16 * 16 * 3 * 7 * 7 and cost.flops_sparse == cost.flops
    assert cost.params == sum(p.numel() for p in head.parameters())


@pytest.mark.parametrize("changes, key", [
    ({"head_prune_sparsity": 1.0}, "head_prune_sparsity"),
    ({"head_prune_sparsity": -0.1}, "head_prune_sparsity"),
    ({"head_prune_start_round": 0}, "head_prune_start_round"),
    ({"head_prune_start_round": 5, "head_prune_end_round": 3}, "head_prune_end_round"),
])
def test_bad_pruning_options_name_the_key(changes, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        ExperimentConfig(**changes)
