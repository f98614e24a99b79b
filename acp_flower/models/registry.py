"""Split-model registry: a backbone by name (config key ``model``), split into a client head
and a server tail at ``cut_layer``, as torchvision's ``register_model`` / ``get_model``.

A model is one file of this package: a subclass of ``Architecture`` decorated with
``register_model(name, options=...)``; its options (a frozen dataclass) become config keys.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from acp_flower.options import ComponentConfig, Registry

A = TypeVar("A", bound="type[Architecture]")


@dataclass
class SplitModel:
    """A head (client side) and a tail (server side) whose composition is the full model."""

    head: nn.Module
    tail: nn.Module
    token_axis: int | None = None
    """Axis of one sample's smashed data along which a codec may send fewer entries than the
    head produces and the tail still runs on what arrives (a ViT's tokens); None = fixed shape."""


class Architecture(ABC):
    """A backbone that can be split; ``build`` makes a fresh, randomly initialised split.

    Parameters
    ----------
    options : dataclass or None
        The model's options (given to ``register_model``).
    """

    name: ClassVar[str]
    provides_attention: ClassVar[bool] = False
    """The head exposes ``cls_attention`` (B x tokens: the CLS token's attention in its last
    block, averaged over heads) after each forward: what attention-based codecs need."""
    cut_what: ClassVar[str] = "modules"
    """What ``cut_layer`` counts, for error messages."""

    def __init__(self, options: Any = None) -> None:
        self.options = options

    @abstractmethod
    def cut_range(self) -> tuple[int, int]:
        """Smallest and largest valid ``cut_layer``."""

    @abstractmethod
    def build(self, num_classes: int, in_channels: int, image_size: int, cut_layer: int) -> SplitModel:
        """A new split model (random init from torch's current RNG)."""

    def check_cut(self, cut_layer: int) -> None:
        """Raise ``ValueError`` naming ``cut_layer`` unless the model can be cut there."""
        lo, hi = self.cut_range()
        if not lo <= cut_layer <= hi:
            raise ValueError(f"config key 'cut_layer': invalid value {cut_layer}; expected an integer in "
                             f"{lo}..{hi} ({self.name} {self.cut_what})")


_REGISTRY: Registry[type[Architecture]] = Registry("model")


def register_model(name: str, *, options: type | None = None) -> Callable[[A], A]:
    """Class decorator adding a model under ``name`` (config ``model = name``); a duplicate raises."""
    return _REGISTRY.register(name, options=options)


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return _REGISTRY.names()


def get_model(name: str) -> type[Architecture]:
    """The architecture class registered under ``name``."""
    return _REGISTRY.get(name)


def build_architecture(cfg: ComponentConfig) -> Architecture:
    """The architecture that ``cfg`` selects (``cfg.model``), with its options."""
    return get_model(cfg.model)(cfg.options("model"))


def smashed_shape(head: nn.Module, in_channels: int, image_size: int) -> torch.Size:
    """Shape of one sample's smashed data out of ``head`` (run once, in eval mode)."""
    with torch.no_grad():
        was_training = head.training
        head.eval()
        out = head(torch.zeros(1, in_channels, image_size, image_size))
        head.train(was_training)
    return out.shape[1:]
