"""A small Vision Transformer (timm's ``VisionTransformer``, random init) split after a block.

The client's head is patch embedding + CLS token + position embedding + the first
``cut_layer`` blocks; the server's tail is the remaining blocks, the final norm and the
classifier on the CLS token. The smashed data is laid out B x D x T (embedding channels on
axis 1, tokens last, CLS first), so the channel codecs (ACP-SL's channel scores, per-channel
quantization) treat an embedding dimension across tokens as a channel, and a codec may send
fewer tokens (``token_axis``): the position embedding is already added, so the tail needs
no token indices and runs on whatever tokens arrive, CLS in front.

timm's attention gives no attention weights from its fused kernel: the head's last block
runs the unfused path, whose softmax output passes through ``attn_drop``; that dropout is
replaced by ``ClsAttentionTap``, which keeps the CLS row (what ADC clusters and ranks
tokens by). Only that block is unfused, for every codec, so models do not differ by codec.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from acp_flower.models.registry import Architecture, SplitModel, register_model
from acp_flower.options import check


@dataclass(frozen=True)
class VitOptions:
    """Options of the ViT (defaults: the DeiT-Tiny shape at 32 x 32 with patch 4 -> 64 tokens + CLS)."""

    vit_embed_dim: int = 192
    """Embedding width D (DeiT-Tiny: 192)."""
    vit_depth: int = 12
    """Transformer blocks in total; ``cut_layer`` of them run on the client (DeiT-Tiny: 12)."""
    vit_heads: int = 3
    """Attention heads per block; must divide vit_embed_dim (DeiT-Tiny: 3)."""
    vit_patch_size: int = 4
    """Patch side in pixels; must divide the image side (32 x 32 / 4 -> 64 patch tokens)."""
    vit_mlp_ratio: float = 4.0
    """MLP hidden width as a multiple of vit_embed_dim."""

    def __post_init__(self) -> None:
        check("vit_depth", self.vit_depth >= 2, "an integer >= 2 (at least one block on each side)")
        check("vit_heads", self.vit_heads >= 1, "an integer >= 1")
        check("vit_embed_dim", self.vit_embed_dim >= 1 and self.vit_embed_dim % self.vit_heads == 0,
              f"a positive multiple of vit_heads ({self.vit_heads})")
        check("vit_patch_size", self.vit_patch_size >= 1, "an integer >= 1 that divides the image side")
        check("vit_mlp_ratio", self.vit_mlp_ratio > 0, "a number > 0")


class ClsAttentionTap(nn.Dropout):
    """``attn_drop`` of the head's last block that also keeps the CLS token's attention row,
    averaged over heads (B x T, detached): the attention scores of ADC."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__(p)
        self.cls_attention: torch.Tensor | None = None

    def forward(self, attn: torch.Tensor) -> torch.Tensor:  # attn: B x heads x T x T, after softmax
        self.cls_attention = attn[:, :, 0, :].mean(1).detach()
        return super().forward(attn)


class ViTHead(nn.Module):
    """Client side: embeddings and the first blocks; output B x D x T (CLS token first)."""

    def __init__(self, vit: VisionTransformer, cut_layer: int) -> None:
        super().__init__()
        self.patch_embed, self.cls_token, self.pos_embed = vit.patch_embed, vit.cls_token, vit.pos_embed
        self.blocks = nn.Sequential(*vit.blocks[:cut_layer])
        last = self.blocks[-1].attn
        last.fused_attn = False  # the unfused path materialises the attention weights
        last.attn_drop = self.tap = ClsAttentionTap(last.attn_drop.p)

    @property
    def cls_attention(self) -> torch.Tensor | None:
        """CLS attention of the last client block in the latest forward (B x T), or None before one."""
        return self.tap.cls_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # B x P x D
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.blocks(x).transpose(1, 2)


class ViTTail(nn.Module):
    """Server side: the remaining blocks, final norm, classifier on the CLS token (token 0)."""

    def __init__(self, vit: VisionTransformer, cut_layer: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*vit.blocks[cut_layer:])
        self.norm, self.head = vit.norm, vit.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: B x D x T'
        x = self.norm(self.blocks(x.transpose(1, 2)))
        return self.head(x[:, 0])


@register_model("vit_tiny", options=VitOptions)
class VitTiny(Architecture):
    """A DeiT-Tiny-shaped ViT trained from scratch (no pretrained weights: nothing is
    downloaded); depth, width and patch size are options, ``cut_layer`` counts client blocks."""

    provides_attention = True
    cut_what = "transformer blocks on the client, of vit_depth"

    def cut_range(self) -> tuple[int, int]:
        return 1, self.options.vit_depth - 1

    def build(self, num_classes: int, in_channels: int, image_size: int, cut_layer: int) -> SplitModel:
        o = self.options
        if image_size % o.vit_patch_size:
            raise ValueError(f"config key 'vit_patch_size': {o.vit_patch_size} does not divide the image side "
                             f"{image_size}")
        self.check_cut(cut_layer)
        vit = VisionTransformer(img_size=image_size, patch_size=o.vit_patch_size, in_chans=in_channels,
                                num_classes=num_classes, embed_dim=o.vit_embed_dim, depth=o.vit_depth,
                                num_heads=o.vit_heads, mlp_ratio=o.vit_mlp_ratio, global_pool="token")
        return SplitModel(ViTHead(vit, cut_layer), ViTTail(vit, cut_layer), token_axis=1)
