"""Codec interface and registry: client-side compression of smashed data and gradients."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from acp_flower.options import ComponentConfig, Registry
from acp_flower.wire import Payload, like

StateDict = dict[str, torch.Tensor]
C = TypeVar("C", bound="type[Codec]")


class Codec(ABC):
    """Compression of the smashed data (client -> server) and of its gradient (back).

    The client owns a codec instance and its state; the server needs none: it decodes
    any payload with ``Payload.to_dense`` and compresses the gradient with ``wire.like``
    (same mask / indices / bit width), which is what ``decode`` / ``encode_grad`` do.

    Parameters
    ----------
    options : dataclass or None
        The codec's options (the dataclass given to ``register_codec``; None if it has none).
    total_steps : int
        Training iterations this client will run (T of ACP-SL eq. 9).
    seed : int
        Seed of the codec's own random generator.
    """

    name: ClassVar[str]
    needs_attention: ClassVar[bool] = False
    """The codec reads the head's ``cls_attention`` (see ``attach``); the config then requires
    a model that provides it."""

    def __init__(self, options: Any = None, *, total_steps: int = 1, seed: int = 0) -> None:
        self.options = options
        self.total_steps = max(1, int(total_steps))
        self.generator = torch.Generator().manual_seed(seed)

    def attach(self, head: nn.Module, sample_shape: tuple[int, ...], num_classes: int) -> None:  # noqa: B027
        """Pair the codec with the client head whose smashed data it will encode (one sample's
        shape: ``sample_shape``), before any training; raise ``ValueError`` naming the config key
        that makes the pair unusable. Default: nothing to do (an optional hook)."""

    @abstractmethod
    def encode(self, smashed: torch.Tensor, labels: torch.Tensor | None = None, *, train: bool = True) -> Payload:
        """Compress smashed data B x N x H x W.

        ``train=True`` is a training step: label-aware codecs need ``labels`` and update
        their state. ``train=False`` is inference: no labels, no state change.
        """

    def decode(self, payload: Payload) -> torch.Tensor:
        """Server side: the dense B x N x H x W tensor (zero-filled where nothing was sent)."""
        return payload.to_dense()

    def encode_grad(self, grad: torch.Tensor, ref: Payload) -> Payload:
        """Server side: compress the gradient w.r.t. the decoded smashed data like ``ref``."""
        return like(ref, grad)

    def decode_grad(self, payload: Payload) -> torch.Tensor:
        """Client side: the dense gradient."""
        return payload.to_dense()

    def state_dict(self) -> StateDict:
        """Client-side state that must persist across rounds (tensors only)."""
        return {"rng": self.generator.get_state()}

    def load_state_dict(self, state: StateDict) -> None:
        self.generator.set_state(state["rng"])

    def eval_state(self) -> StateDict:
        """What inference needs from training (averaged across clients by FedAvg)."""
        return {}

    def load_eval_state(self, state: StateDict) -> None:  # noqa: B027 - optional hook, no-op by default
        """Install an (aggregated) ``eval_state`` for inference."""


_REGISTRY: Registry[type[Codec]] = Registry("codec")


def register_codec(name: str, *, options: type | None = None) -> Callable[[C], C]:
    """Class decorator adding a codec under ``name`` (config ``codec = name``); a duplicate raises.

    ``options`` is the dataclass of the codec's config keys (see ``acp_flower.options``);
    the codec is constructed with an instance of it.
    """
    return _REGISTRY.register(name, options=options)


def list_codecs() -> list[str]:
    """Names of the registered codecs, sorted."""
    return _REGISTRY.names()


def get_codec(name: str) -> type[Codec]:
    """The codec class registered under ``name``."""
    return _REGISTRY.get(name)


def build_codec(cfg: ComponentConfig, *, total_steps: int = 1, seed: int = 0) -> Codec:
    """Instantiate the codec that ``cfg`` selects (``cfg.codec``), with its options."""
    return get_codec(cfg.codec)(cfg.options("codec"), total_steps=total_steps, seed=seed)
