"""Server runtime: the tail, its optimizer and one SL exchange per call (no Flower, no Ray)."""

from __future__ import annotations

import copy

import torch

from acp_flower.config import ExperimentConfig
from acp_flower.data import dataset_info
from acp_flower.exchanges import Exchange, build_exchange
from acp_flower.guard import check_finite
from acp_flower.models import smashed_shape
from acp_flower.runtime.common import (
    StateDict,
    build_split,
    clone_state,
    flatten_optimizer,
    make_optimizer,
    unflatten_optimizer,
)
from acp_flower.runtime.stats import ServerStats, train_stats
from acp_flower.wire import Payload, PayloadError, from_bytes, to_bytes


class ServerRuntime:
    """Holds a tail copy and its optimizer; ``step`` answers one smashed-data payload.

    What a step does is the ``exchange``'s (default: backprop). The server needs no codec:
    it rebuilds the dense smashed data from the payload (``Payload.to_dense``) and any
    reply goes back compressed like the payload (``wire.like``).
    """

    def __init__(self, tail: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 exchange: Exchange | None = None, *, sample_shape: tuple[int, ...] | None = None,
                 num_classes: int | None = None, token_axis: int | None = None) -> None:
        self.tail, self.optimizer, self.device = tail.to(device), optimizer, device
        self.exchange = exchange if exchange is not None else build_exchange(ExperimentConfig())
        self.sample_shape, self.num_classes = sample_shape, num_classes
        self.token_axis = token_axis
        """What a well-formed upload holds: one sample's smashed-data shape (with 1..all entries
        along ``token_axis``, when the model has one), labels < num_classes (None = not checked)."""
        self.stats = ServerStats()
        self.prune_trace: list[float] | None = None
        """Set to a list to collect the pruned fraction of every upload (``pop_prune_trace``)."""

    def step(self, up: bytes) -> bytes:
        """One exchange: decode the upload, let the exchange train on it, encode its reply (b"" if none)."""
        reply = self.exchange.server_step(self, self.receive(up))
        return b"" if reply is None else to_bytes(reply)

    def receive(self, up: bytes) -> Payload:
        """Decode and check one upload (``PayloadError`` if the tail cannot train on it); traces it."""
        payload = from_bytes(up)
        if self.prune_trace is not None:
            self.prune_trace.append(1.0 - payload.kept_fraction)
        self.check_upload(payload)
        return payload

    def check_upload(self, payload: Payload) -> None:
        """Refuse an upload the tail cannot train on, naming what is wrong (``PayloadError``)."""
        if payload.labels is None and payload.label_counts is None:
            raise PayloadError("smashed-data payload carries no labels")
        if self.sample_shape is not None and not self._fits(tuple(payload.shape[1:])):
            tokens = "" if self.token_axis is None else f", at most {self.sample_shape[self.token_axis]} along axis " \
                                                         f"{self.token_axis + 1}"
            raise PayloadError(f"smashed-data payload of shape {tuple(payload.shape)}; the model's cut gives "
                               f"(batch, {', '.join(map(str, self.sample_shape))}){tokens}")
        if payload.label_counts is not None:
            counts = payload.label_counts
            if counts.shape[0] != payload.batch_size or (self.num_classes is not None
                                                         and counts.shape[1] != self.num_classes):
                raise PayloadError(f"payload carries label counts of shape {tuple(counts.shape)} for a batch of "
                                   f"{payload.batch_size} and {self.num_classes} classes")
            if counts.numel() and int(counts.sum(1).min()) < 1:
                raise PayloadError("payload carries a merged sample with no labels (a row of zero label counts)")
            return
        if payload.labels.numel() != payload.batch_size:
            raise PayloadError(f"payload carries {payload.labels.numel()} labels for a batch of {payload.batch_size}")
        if self.num_classes is not None and payload.labels.numel() and int(payload.labels.max()) >= self.num_classes:
            raise PayloadError(f"label {int(payload.labels.max())} out of range for {self.num_classes} classes")

    def _fits(self, shape: tuple[int, ...]) -> bool:
        full = tuple(self.sample_shape)
        if self.token_axis is None or len(shape) != len(full):
            return shape == full
        axis = self.token_axis
        return shape[:axis] + shape[axis + 1:] == full[:axis] + full[axis + 1:] and 1 <= shape[axis] <= full[axis]

    @torch.no_grad()
    def record(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch's training loss and accuracy (``ServerSide``, for exchanges); guards the loss.

        ``labels`` are class indices (B), or label counts (C x classes) of merged samples: then
        every member counts, judged by its merged sample's prediction (``train_stats``)."""
        check_finite("loss (server)", loss)
        self.stats += train_stats(loss, logits, labels)

    def pop_stats(self) -> ServerStats:
        """Training totals since the last call."""
        stats, self.stats = self.stats, ServerStats()
        return stats

    def pop_prune_trace(self) -> list[float]:
        """Per-upload pruned fractions since the last call (empty when tracing is off)."""
        if self.prune_trace is None:  # popping must not switch tracing on
            return []
        trace, self.prune_trace = self.prune_trace, []
        return trace

    def get_state(self) -> StateDict:
        return clone_state(self.tail.state_dict())

    def set_state(self, state: StateDict) -> None:
        """Replace the tail weights; the optimizer state is kept (it persists per slot)."""
        self.tail.load_state_dict(state)

    def state_dict(self) -> dict[str, StateDict]:
        """Tail weights and optimizer state (for checkpoints; ``get_state`` is weights only)."""
        return {"tail": self.get_state(), "optimizer": flatten_optimizer(self.optimizer.state_dict())}

    def load_state_dict(self, state: dict[str, StateDict]) -> None:
        self.tail.load_state_dict(state["tail"])
        self.optimizer.load_state_dict(unflatten_optimizer(state["optimizer"], self.optimizer.state_dict()))


def build_server(cfg: ExperimentConfig, device: torch.device) -> ServerRuntime:
    """A server runtime with a freshly built tail (load weights with ``set_state``)."""
    split = build_split(cfg)
    info = dataset_info(cfg.dataset)
    tail = split.tail.to(device)
    return ServerRuntime(tail, make_optimizer(cfg, tail.parameters()), device, build_exchange(cfg),
                         sample_shape=tuple(smashed_shape(split.head, info.in_channels, info.image_size)),
                         num_classes=info.num_classes, token_axis=split.token_axis)


class TailSlots:
    """Tail copies by slot (created on first use), stepped one exchange at a time.

    Shared by the local runner and the Flower app's ``flower`` and ``ray`` transports, so a
    slot means the same tail (and optimizer) everywhere. ``clear`` drops every copy and its
    optimizer (SplitFed-v1 with fresh tails does after each group of clients), keeping their
    training totals and prune traces for the next ``pop_stats`` / ``pop_prune_trace``.
    """

    def __init__(self, cfg: ExperimentConfig, device: torch.device, *, prune_trace: bool = False) -> None:
        self.cfg, self.device, self.trace = cfg, device, prune_trace
        self.servers: dict[int, ServerRuntime] = {}
        self._template: ServerRuntime | None = None
        self._cleared_stats = ServerStats()
        self._cleared_trace: list[tuple[int, float]] = []

    def server(self, slot: int) -> ServerRuntime:
        if slot not in self.servers:
            self.servers[slot] = server = self._new_server()
            if self.trace:
                server.prune_trace = []
        return self.servers[slot]

    def _new_server(self) -> ServerRuntime:
        """A tail copy with a new optimizer. Its weights are overwritten (set / load_state_dict)
        before use, so it is a copy of one template built once: building the model takes ~0.2 s
        (ResNet-18), a copy of the tail ~0.03 s, and SplitFed-v1 with fresh tails makes one per
        client per round. The template's random init must not draw from the process RNG, or
        when copies are built would change results."""
        if self._template is None:
            with torch.random.fork_rng(devices=[]):
                self._template = build_server(self.cfg, self.device)
        t = self._template
        tail = copy.deepcopy(t.tail)
        return ServerRuntime(tail, make_optimizer(self.cfg, tail.parameters()), self.device, build_exchange(self.cfg),
                             sample_shape=t.sample_shape, num_classes=t.num_classes, token_axis=t.token_axis)

    def step(self, slot: int, up: bytes) -> bytes:
        return self.server(slot).step(up)

    def get(self, slot: int) -> StateDict:
        return self.server(slot).get_state()

    def set(self, slot: int, state: StateDict) -> None:
        self.server(slot).set_state(state)

    def clear(self) -> None:
        """Free every tail copy and its optimizer state; the next use of a slot starts afresh."""
        self._cleared_stats = self._pop_live_stats(self._cleared_stats)
        self._cleared_trace += self._pop_live_trace()
        self.servers.clear()

    def __len__(self) -> int:
        """Tail copies alive now."""
        return len(self.servers)

    def pop_stats(self) -> ServerStats:
        stats, self._cleared_stats = self._pop_live_stats(self._cleared_stats), ServerStats()
        return stats

    def _pop_live_stats(self, start: ServerStats) -> ServerStats:
        # one running sum in slot order, cleared copies first: the total does not depend on
        # how many clears split the round
        for _, server in sorted(self.servers.items()):
            start = start + server.pop_stats()
        return start

    def state_dict(self) -> dict[int, dict[str, StateDict]]:
        """Every slot's tail and optimizer state, by slot."""
        return {slot: server.state_dict() for slot, server in self.servers.items()}

    def load_state_dict(self, state: dict[int, dict[str, StateDict]]) -> None:
        for slot, server_state in state.items():
            self.server(int(slot)).load_state_dict(server_state)

    def pop_prune_trace(self) -> list[tuple[int, float]]:
        """(slot, pruned fraction) of every upload since the last call, slot by slot
        (copies freed by ``clear`` first, in the order they were freed)."""
        trace, self._cleared_trace = self._cleared_trace + self._pop_live_trace(), []
        return trace

    def _pop_live_trace(self) -> list[tuple[int, float]]:
        return [(slot, p) for slot, s in sorted(self.servers.items()) for p in s.pop_prune_trace()]
