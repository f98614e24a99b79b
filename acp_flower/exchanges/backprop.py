"""Backpropagation across the cut (classic split learning): smashed data up, its gradient down."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from acp_flower.exchanges.base import (
    ClientSide,
    Exchange,
    GroupSide,
    Send,
    ServerSide,
    register_exchange,
    targets,
    train_tail,
)
from acp_flower.options import check
from acp_flower.wire import Payload, like, to_bytes


@dataclass(frozen=True)
class BackpropOptions:
    """Options of the backprop exchange."""

    down_quantize_bits: int = 0
    """Down-link gradient quantization (lightweight FedSL, arXiv 2412.06414): 0 = the gradient
    goes back like the up-link (float32, or the codec's own bit width); 1..16 = uniform
    quantization of the gradient values to that many bits."""

    def __post_init__(self) -> None:
        check("down_quantize_bits", 0 <= self.down_quantize_bits <= 16, "an integer in 0..16 (0 = off)")


@register_exchange("backprop", options=BackpropOptions)
class BackpropExchange(Exchange):
    """The client sends the smashed data and labels; the server runs the tail forward and
    backward with the true loss, steps, and sends back the gradient w.r.t. the smashed
    data, compressed like the upload (same channels / positions; ``down_quantize_bits``);
    the client backpropagates it through its head and steps.
    """

    def __init__(self, options: BackpropOptions | None = None) -> None:
        super().__init__(options or BackpropOptions())
        self.down_bits = self.options.down_quantize_bits or None

    def client_step(self, client: ClientSide, x: torch.Tensor, y: torch.Tensor,
                    send: Send) -> tuple[Payload, bytes, Payload | None, bytes]:
        smashed = client.model(x.to(client.device, non_blocking=True))
        payload, up = client.upload(smashed, y)
        down = send(up)
        grad_payload, grad = client.decode_grad(down, payload)
        client.optimizer.zero_grad(set_to_none=True)
        smashed.backward(grad)
        client.optimizer.step()
        return payload, up, grad_payload, down

    def server_step(self, server: ServerSide, payload: Payload) -> Payload:
        x = payload.to_dense().to(server.device, non_blocking=True).requires_grad_()
        train_tail(server, x, targets(payload).to(server.device, non_blocking=True))
        return like(payload, x.grad, bits=self.down_bits)

    def group_step(self, group: GroupSide, xs: Sequence[torch.Tensor],
                   ys: Sequence[torch.Tensor]) -> list[tuple[Payload, bytes, Payload | None, bytes]]:
        smashed = group.forward_heads(xs)
        payloads, ups = group.upload(smashed, ys)
        received = group.deliver(ups)
        x = torch.stack([p.to_dense() for p in received]).to(group.device, non_blocking=True).requires_grad_()
        group.train_tails(x, [targets(p).to(group.device, non_blocking=True) for p in received])
        downs = [to_bytes(like(p, g, bits=self.down_bits)) for p, g in zip(received, x.grad)]
        grad_payloads, grads = group.decode_grads(downs, payloads)
        group.backward_heads(smashed, grads)
        return list(zip(payloads, ups, grad_payloads, downs))
