"""Exchange protocols: what one mini-batch exchange does on the client, on the server, and on the wire.

An exchange is chosen by name (config key ``exchange``) like a codec, and is orthogonal to
the strategy (who trains when) and to the codec (how tensors are compressed): every
strategy runs with every exchange and every up-link codec. The runtimes own the models,
optimizers, codecs and statistics (``ClientSide`` / ``ServerSide``); an exchange only says
what one step does with them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from acp_flower.guard import check_finite
from acp_flower.options import ComponentConfig, Registry
from acp_flower.wire import Payload

Send = Callable[[bytes], bytes]
"""``send(up_bytes) -> down_bytes``: one upload to the server and its reply (``b""`` if none)."""
E = TypeVar("E", bound="type[Exchange]")


class ClientSide(Protocol):
    """What the client runtime offers an exchange."""

    model: nn.Module
    """The client model (``Exchange.client_model``); ``model(x)`` is the smashed data."""
    optimizer: torch.optim.Optimizer
    device: torch.device

    def upload(self, smashed: torch.Tensor, labels: torch.Tensor) -> tuple[Payload, bytes]:
        """Encode the smashed data for the up-link (codec, dropout, labels): the payload and its bytes."""

    def decode_grad(self, down: bytes, up: Payload) -> tuple[Payload, torch.Tensor]:
        """Parse a gradient reply to ``up``: its payload and the dense gradient on ``device``."""

    def record_local(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch's client-side loss and accuracy to the round's local statistics.

        Call it before ``loss.backward()``: it raises ``NonFiniteError`` on a non-finite loss,
        so nothing is stepped with it."""


class ServerSide(Protocol):
    """What the server runtime offers an exchange."""

    tail: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device

    def record(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch's training loss and accuracy to the server's statistics (before
        ``loss.backward()``: raises ``NonFiniteError`` on a non-finite loss)."""


class GroupSide(Protocol):
    """What a driver offers ``Exchange.group_step``: G clients, each with its own tail copy,
    whose batches have one shape (``acp_flower.runtime.batched.ClientGroup``). Tensors carry
    the group as their first dimension; per-client values come as lists in client order."""

    device: torch.device

    def forward_heads(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Every client's smashed data, G x B x ..., through its own head."""

    def upload(self, smashed: torch.Tensor, ys: Sequence[torch.Tensor]) -> tuple[list[Payload], list[bytes]]:
        """``ClientSide.upload`` of every client."""

    def deliver(self, ups: Sequence[bytes]) -> list[Payload]:
        """Every upload as its tail copy's server decodes and checks it."""

    def train_tails(self, x: torch.Tensor, ys: Sequence[torch.Tensor]) -> None:
        """``train_tail`` of every tail copy on its slice of x (G x ...); leaves ``x.grad``."""

    def decode_grads(self, downs: Sequence[bytes], payloads: Sequence[Payload]) -> tuple[list[Payload], list]:
        """``ClientSide.decode_grad`` of every client."""

    def backward_heads(self, smashed: torch.Tensor, grads: Sequence[torch.Tensor]) -> None:
        """Backpropagate each client's gradient through its head and step its optimizer."""


class Exchange(ABC):
    """One mini-batch exchange between a client and the server.

    Parameters
    ----------
    options : dataclass or None
        The exchange's options (given to ``register_exchange``).
    """

    name: ClassVar[str]
    blocking: ClassVar[bool] = True
    """The client waits for the server's reply before its next batch (the link model pays
    a round trip per batch); False = uploads stream, nothing comes back."""

    def __init__(self, options: Any = None) -> None:
        self.options = options

    def client_model(self, head: nn.Module, *, smashed_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """The model the client trains: ``head`` itself, or ``head`` plus modules of this exchange
        (``smashed_shape``: one sample's smashed data, C x H x W or, for a ViT, D x tokens).

        Its ``state_dict`` is what strategies hand between clients and average.
        """
        return head

    def head(self, model: nn.Module) -> nn.Module:
        """The part of ``client_model`` that produces the smashed data (what reaches the server)."""
        return model

    def local_logits(self, model: nn.Module, smashed: torch.Tensor) -> torch.Tensor | None:
        """The client's own prediction from the smashed data (e.g. an auxiliary head), if it has one."""
        return None

    @abstractmethod
    def client_step(self, client: ClientSide, x: torch.Tensor, y: torch.Tensor,
                    send: Send) -> tuple[Payload, bytes, Payload | None, bytes]:
        """One training batch on the client; returns (up payload, up bytes, down payload or None, down bytes)."""

    @abstractmethod
    def server_step(self, server: ServerSide, payload: Payload) -> Payload | None:
        """Train on one received upload; the reply payload, or None when nothing goes back."""

    def group_step(self, group: GroupSide, xs: Sequence[torch.Tensor],
                   ys: Sequence[torch.Tensor]) -> list[tuple[Payload, bytes, Payload | None, bytes]]:
        """``client_step`` and ``server_step`` of a group of clients at once, each against its own
        tail copy (config ``batch_clients``); per client what ``client_step`` returns. An
        exchange that does not override it cannot be batched."""
        raise NotImplementedError(f"exchange {self.name!r} cannot run clients batched")

    @classmethod
    def batchable(cls) -> bool:
        """Whether ``group_step`` is implemented."""
        return cls.group_step is not Exchange.group_step


def targets(payload: Payload) -> torch.Tensor:
    """What the tail trains an upload against: its labels, or the label counts of merged samples."""
    return payload.labels if payload.label_counts is None else payload.label_counts


def train_tail(server: ServerSide, x: torch.Tensor, y: torch.Tensor) -> None:
    """One optimizer step of the tail on (x, y) with the true loss (cross-entropy).

    ``y`` holds class indices (B), or label counts (C x classes) of merged samples (ADC):
    then each merged sample's target is its members' averaged one-hot label and the loss is
    the soft-target cross-entropy, averaged over the merged samples (as the ADC authors' code).
    The divergence guard runs before the step: a non-finite loss, or gradient w.r.t. ``x``
    (when ``x`` requires one), raises ``NonFiniteError`` and leaves the tail unchanged.
    """
    server.tail.train()
    logits = server.tail(x)
    loss = F.cross_entropy(logits, y if y.dim() == 1 else y.float() / y.sum(1, keepdim=True))
    server.record(loss, logits, y)
    server.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if x.grad is not None:
        check_finite("gradient (server, w.r.t. the smashed data)", x.grad)
    server.optimizer.step()


_REGISTRY: Registry[type[Exchange]] = Registry("exchange")


def register_exchange(name: str, *, options: type | None = None) -> Callable[[E], E]:
    """Class decorator adding an exchange under ``name`` (config ``exchange = name``); a duplicate raises."""
    return _REGISTRY.register(name, options=options)


def list_exchanges() -> list[str]:
    """Names of the registered exchanges, sorted."""
    return _REGISTRY.names()


def get_exchange(name: str) -> type[Exchange]:
    """The exchange class registered under ``name``."""
    return _REGISTRY.get(name)


def build_exchange(cfg: ComponentConfig) -> Exchange:
    """Instantiate the exchange that ``cfg`` selects (``cfg.exchange``), with its options."""
    return get_exchange(cfg.exchange)(cfg.options("exchange"))
