"""Decoupled split learning via an auxiliary loss (arXiv 2601.19261): no gradient crosses the cut.

The client's head gets a small auxiliary classifier at the cut and trains head + auxiliary
classifier on its own cross-entropy; the smashed data goes to the server detached, and the
server trains the tail on it with the true loss. Nothing travels back (down-link 0 bytes),
so the client need not wait for the server between batches (``blocking = False``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from acp_flower.exchanges.base import ClientSide, Exchange, Send, ServerSide, register_exchange, targets, train_tail
from acp_flower.options import check_choice
from acp_flower.wire import Payload, PayloadError


def linear_aux(channels: int, num_classes: int) -> nn.Module:
    """Global average pool + linear classifier: the cheapest local signal."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(channels, num_classes))


def conv_mlp_aux(channels: int, num_classes: int, hidden: int = 256) -> nn.Module:
    """3 x (3x3 conv + BatchNorm + ReLU) at the smashed data's width, then a 3-layer MLP.

    The shape of the authors' auxiliary head (their code: three conv blocks, then an MLP
    classifier); the widths are ours: convs keep the smashed channels, a 2 x 2 average
    pool, then MLP 4C -> 256 -> 256 -> classes.
    """
    convs: list[nn.Module] = []
    for _ in range(3):
        convs += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
    return nn.Sequential(
        *convs, nn.AdaptiveAvgPool2d(2), nn.Flatten(1),
        nn.Linear(4 * channels, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
    )


class ClsToken(nn.Module):
    """The CLS token (token 0) of ViT smashed data B x D x T."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 0]


def token_linear_aux(width: int, num_classes: int) -> nn.Module:
    """ViT smashed data: LayerNorm + linear classifier on the CLS token (what a ViT's own head does)."""
    return nn.Sequential(ClsToken(), nn.LayerNorm(width), nn.Linear(width, num_classes))


def token_mlp_aux(width: int, num_classes: int, hidden: int = 256) -> nn.Module:
    """ViT smashed data: LayerNorm + the 3-layer MLP of ``conv_mlp_aux`` on the CLS token."""
    return nn.Sequential(ClsToken(), nn.LayerNorm(width), nn.Linear(width, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


AUX_HEADS: dict[str, Callable[[int, int], nn.Module]] = {"conv_mlp": conv_mlp_aux, "linear": linear_aux}
"""Auxiliary classifiers by name (config key ``aux_head``): builder(smashed channels, classes)."""
TOKEN_AUX_HEADS: dict[str, Callable[[int, int], nn.Module]] = {"conv_mlp": token_mlp_aux, "linear": token_linear_aux}
"""The same for token smashed data (D x T, a ViT's): no convolutions, the CLS token's classifier."""


@dataclass(frozen=True)
class DecoupledOptions:
    """Options of the decoupled exchange."""

    aux_head: str = "conv_mlp"
    """Auxiliary classifier at the cut: conv_mlp (the authors' shape; default, because a
    linear probe asks the shallow default head for linearly separable features after one
    conv, a much stronger constraint than the tail's) or linear (pool + linear, cheapest)."""

    def __post_init__(self) -> None:
        check_choice("aux_head", self.aux_head, AUX_HEADS)


class AuxClientModel(nn.Module):
    """The client's model in decoupled SL: ``head`` (its output is the smashed data) + ``aux``."""

    def __init__(self, head: nn.Module, aux: nn.Module) -> None:
        super().__init__()
        self.head, self.aux = head, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


@register_exchange("decoupled", options=DecoupledOptions)
class DecoupledExchange(Exchange):
    """Client: head forward, upload the (detached) smashed data, auxiliary loss backward, step.
    Server: tail forward/backward with the true loss on the received data, step, no reply.

    Works with every up-link codec (the codec compresses what travels; the auxiliary head
    sees the client's own uncompressed smashed data). At test time the server path
    (head -> codec -> tail) gives ``test_accuracy`` and the auxiliary head its own
    ``aux_test_accuracy``.
    """

    blocking = False

    def __init__(self, options: DecoupledOptions | None = None) -> None:
        super().__init__(options or DecoupledOptions())

    def client_model(self, head: nn.Module, *, smashed_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        if len(smashed_shape) == 2:  # tokens (ViT)
            return AuxClientModel(head, TOKEN_AUX_HEADS[self.options.aux_head](smashed_shape[0], num_classes))
        aux = AUX_HEADS[self.options.aux_head](smashed_shape[0], num_classes)
        return AuxClientModel(head, aux.to(memory_format=torch.channels_last))  # as the head: NHWC on CPU

    def head(self, model: nn.Module) -> nn.Module:
        return model.head

    def local_logits(self, model: nn.Module, smashed: torch.Tensor) -> torch.Tensor:
        return model.aux(smashed)

    def client_step(self, client: ClientSide, x: torch.Tensor, y: torch.Tensor,
                    send: Send) -> tuple[Payload, bytes, None, bytes]:
        smashed = client.model(x.to(client.device, non_blocking=True))
        payload, up = client.upload(smashed, y)
        down = send(up)
        if down:
            raise PayloadError(f"decoupled exchange: the server answered with {len(down)} bytes, expected none")
        y = y.to(client.device, non_blocking=True)
        logits = client.model.aux(smashed)
        loss = F.cross_entropy(logits, y)
        client.record_local(loss, logits, y)
        client.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        client.optimizer.step()
        return payload, up, None, down

    def server_step(self, server: ServerSide, payload: Payload) -> None:
        x = payload.to_dense().to(server.device, non_blocking=True)  # detached: no gradient goes back
        train_tail(server, x, targets(payload).to(server.device, non_blocking=True))
        return None
