"""Helpers shared by the client and server runtimes: devices, optimizers, seeds, models."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable

import torch
from torch import nn

from acp_flower.codecs import Codec, build_codec
from acp_flower.config import ExperimentConfig
from acp_flower.data import dataset_info
from acp_flower.exchanges import Exchange, build_exchange
from acp_flower.models import SplitModel, build_architecture, smashed_shape
from acp_flower.seeds import derive_seed

StateDict = dict[str, torch.Tensor]


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available else CPU; an explicit CUDA device must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"config key 'device': {device!r} requested but CUDA is not available")
    return torch.device(device)


def make_optimizer(cfg: ExperimentConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The configured optimizer (same kind and settings for heads and tails)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_split(cfg: ExperimentConfig) -> SplitModel:
    """The config's model (``model``, registry of ``acp_flower.models``) for its dataset, split at
    ``cut_layer`` (random init from the current RNG)."""
    info = dataset_info(cfg.dataset)
    return build_architecture(cfg).build(info.num_classes, info.in_channels, info.image_size, cfg.cut_layer)


def check_model(cfg: ExperimentConfig) -> None:
    """Build the config's split model and pair its codec with the head once, so that what only
    the model can tell (a patch that does not tile the dataset's images, more ``adc_tokens``
    than the head produces) raises its ``ValueError`` before any data is loaded or written."""
    exchange = build_exchange(cfg)
    attach_codec(cfg, build_codec(cfg), exchange.head(client_model_of(cfg, exchange, _seeded_split(cfg).head)))


def attach_codec(cfg: ExperimentConfig, codec: Codec, head: nn.Module) -> None:
    """``codec.attach`` to ``head`` with its smashed-data shape and the dataset's classes."""
    info = dataset_info(cfg.dataset)
    codec.attach(head, tuple(smashed_shape(head, info.in_channels, info.image_size)), info.num_classes)


def client_model_of(cfg: ExperimentConfig, exchange: Exchange, head: nn.Module) -> nn.Module:
    """``head`` wrapped into the exchange's client model; its own modules are seeded (stream 8)."""
    info = dataset_info(cfg.dataset)
    shape = tuple(smashed_shape(head, info.in_channels, info.image_size))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, 8))
        return exchange.client_model(head, smashed_shape=shape, num_classes=info.num_classes)


def _seeded_split(cfg: ExperimentConfig) -> SplitModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, 0))
        return build_split(cfg)


def build_client_model(cfg: ExperimentConfig) -> nn.Module:
    """The client model of a run with its seeded initial weights (the same on every driver).

    Every client starts from the same weights, so the model is built once per config and
    copied: building the whole split model takes ~0.2 s (ResNet-18), a copy of the head
    milliseconds, which is what lets a run register 10,000 clients.
    """
    return copy.deepcopy(_initial_client_model(cfg))


@functools.lru_cache(maxsize=1)
def _initial_client_model(cfg: ExperimentConfig) -> nn.Module:
    return client_model_of(cfg, build_exchange(cfg), _seeded_split(cfg).head)


@functools.lru_cache(maxsize=4)
def has_batchnorm(cfg: ExperimentConfig) -> bool:
    """Whether the split model (head or tail) normalizes with batch statistics: then a training
    batch of one sample cannot be used (BatchNorm after global pooling sees one value per channel)."""
    split = _seeded_split(cfg)
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for part in (split.head, split.tail) for m in part.modules())


def initial_states(cfg: ExperimentConfig) -> tuple[StateDict, StateDict]:
    """Seeded initial (client-model state, tail state); identical for every driver."""
    split = _seeded_split(cfg)
    model = client_model_of(cfg, build_exchange(cfg), split.head)
    return clone_state(model.state_dict()), clone_state(split.tail.state_dict())


def clone_state(state: StateDict) -> StateDict:
    """Detached CPU copies of a state dict's tensors."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def flatten_optimizer(sd: dict) -> StateDict:
    """Optimizer state as a flat name -> tensor dict (per-parameter buffers only)."""
    out = {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            out[f"{pid}.{key}"] = value.detach().cpu().clone() if torch.is_tensor(value) else torch.tensor(value)
    return out


def unflatten_optimizer(flat: StateDict, template: dict) -> dict:
    """Inverse of ``flatten_optimizer``; hyper-parameters come from ``template`` (the live optimizer's)."""
    state: dict[int, dict] = {}
    for name, value in flat.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": template["param_groups"]}
