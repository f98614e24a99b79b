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

from acp_flower.exchanges.base import ClientSide, Exchange, Send, ServerSide, register_exchange, train_tail
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


AUX_HEADS: dict[str, Callable[[int, int], nn.Module]] = {"conv_mlp": conv_mlp_aux, "linear": linear_aux}
"""Auxiliary classifiers by name (config key ``aux_head``): builder(smashed channels, classes)."""


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

    def client_model(self, head: nn.Module, *, smashed_channels: int, num_classes: int) -> nn.Module:
        aux = AUX_HEADS[self.options.aux_head](smashed_channels, num_classes)
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
        train_tail(server, x, payload.labels.to(server.device, non_blocking=True))
        return None
