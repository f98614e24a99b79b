"""The model registry and the split ViT: the split is timm's model, the CLS attention is exact."""

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from acp_flower.config import ExperimentConfig
from acp_flower.models import get_model, list_models, register_model, smashed_shape, split_resnet18
from acp_flower.models.registry import Architecture
from acp_flower.models.vit import ViTHead, VitOptions, ViTTail
from acp_flower.runtime.common import build_split

SMALL = VitOptions(vit_embed_dim=48, vit_depth=4, vit_heads=3, vit_patch_size=8)


def _vit(seed=0):
    torch.manual_seed(seed)
    return VisionTransformer(img_size=32, patch_size=8, num_classes=10, embed_dim=48, depth=4, num_heads=3)


def test_registry_lists_models_and_rejects_duplicates_and_unknown():
    assert list_models() == ["resnet18", "vit_tiny"]
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet18")(type("X", (Architecture,), {}))
    with pytest.raises(ValueError, match="'model': unknown value 'vgg'; allowed: resnet18, vit_tiny"):
        get_model("vgg")


def test_head_then_tail_is_timms_forward():
    vit = _vit()
    x = torch.randn(5, 3, 32, 32)
    head, tail = ViTHead(vit, 2), ViTTail(vit, 2)
    vit.eval(), head.eval(), tail.eval()
    smashed = head(x)
    assert smashed.shape == (5, 48, 17)  # B x D x (16 patches + CLS)
    torch.testing.assert_close(tail(smashed), vit(x), rtol=1e-5, atol=1e-5)
    # The head and the tail hold disjoint parts of the model, together all of it.
    names = set(head.state_dict()) | {f"tail.{k}" for k in tail.state_dict()}
    assert len(names) == len(head.state_dict()) + len(tail.state_dict())
    assert sum(p.numel() for p in head.parameters()) + sum(p.numel() for p in tail.parameters()) == \
        sum(p.numel() for p in vit.parameters())


def test_cls_attention_is_the_last_client_blocks_softmax_row():
    vit = _vit()
    head = ViTHead(vit, 2).eval()
    x = torch.randn(3, 3, 32, 32)
    head(x)
    # Recompute block 1's attention by hand from its input.
    with torch.no_grad():
        tokens = vit.patch_embed(x)
        tokens = torch.cat([vit.cls_token.expand(3, -1, -1), tokens], 1) + vit.pos_embed
        block = vit.blocks[1]
        h = block.norm1(vit.blocks[0](tokens))
        attn = block.attn
        qkv = attn.qkv(h).reshape(3, 17, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        weights = ((qkv[0] * attn.scale) @ qkv[1].transpose(-2, -1)).softmax(-1)
    torch.testing.assert_close(head.cls_attention, weights[:, :, 0, :].mean(1))
    torch.testing.assert_close(head.cls_attention.sum(1), torch.ones(3))


def test_tail_runs_on_fewer_tokens_with_cls_first():
    split = get_model("vit_tiny")(SMALL).build(10, 3, 32, 2)
    smashed = split.head(torch.randn(2, 3, 32, 32))
    assert split.token_axis == 1 and split.tail(smashed[:, :, :5]).shape == (2, 10)
    assert split.tail(smashed[:, :, :1]).shape == (2, 10)


def test_cut_and_patch_errors_name_the_key():
    arch = get_model("vit_tiny")(SMALL)
    with pytest.raises(ValueError, match=r"'cut_layer'.*1..3"):
        arch.build(10, 3, 32, 4)
    with pytest.raises(ValueError, match=r"'vit_patch_size': 8 does not divide the image side 28"):
        arch.build(10, 1, 28, 2)


def test_resnet_path_is_unchanged_by_the_registry():
    cfg = ExperimentConfig(dataset="synthetic")
    torch.manual_seed(3)
    via_registry = build_split(cfg)
    torch.manual_seed(3)
    direct = split_resnet18(10, 3, cfg.cut_layer)
    for a, b in ((via_registry.head, direct.head), (via_registry.tail, direct.tail)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert via_registry.token_axis is None
    assert tuple(smashed_shape(via_registry.head, 3, 32)) == (64, 8, 8)
