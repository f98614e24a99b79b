"""Plain result records exchanged between runtimes, strategies and drivers, and FedAvg."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import torch

StateDict = dict[str, torch.Tensor]


@dataclass
class TrafficStats:
    """Communication totals of a client over some steps (summable)."""

    steps: int = 0
    """Mini-batch exchanges."""
    bytes_up: int = 0
    """Serialized bytes client -> server (smashed data, labels, mask/indices)."""
    bytes_down: int = 0
    """Serialized bytes server -> client (gradients)."""
    ideal_bits_up: int = 0
    """Information content of the uplink under the RandTopk-paper convention."""
    ideal_bits_down: int = 0
    """Information content of the downlink under the same convention."""
    prune_ratio_sum: float = 0.0
    """Sum over steps of the fraction of smashed data the codec dropped."""

    def __add__(self, other: TrafficStats) -> TrafficStats:
        return TrafficStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class ServerStats:
    """Training loss/accuracy totals (summable): the server's, or a client's own (auxiliary) ones."""

    loss_sum: float = 0.0
    """Sum over samples of the cross-entropy loss."""
    correct: int = 0
    """Correctly classified training samples."""
    samples: int = 0
    """Training samples processed."""

    def __add__(self, other: ServerStats) -> ServerStats:
        return ServerStats(
            self.loss_sum + other.loss_sum, self.correct + other.correct, self.samples + other.samples
        )

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.samples if self.samples else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples if self.samples else float("nan")


def train_stats(loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> ServerStats:
    """A training batch's ``ServerStats``.

    ``labels`` are class indices (B): ``loss`` (the batch mean) times B, and the correct
    predictions. Or label counts (C x classes) of C merged samples (ADC): every member is a
    sample, judged by the prediction for its merged sample, so the loss sum is the members'
    cross-entropy against that prediction and a member is correct when the prediction is its label.
    """
    if labels.dim() == 1:
        batch = labels.numel()
        return ServerStats(float(loss) * batch, int((logits.argmax(1) == labels).sum()), batch)
    counts = labels.to(logits.dtype)
    loss_sum = float(-(counts * torch.log_softmax(logits.detach(), dim=1)).sum())
    return ServerStats(loss_sum, int(labels.gather(1, logits.argmax(1, keepdim=True)).sum()), int(labels.sum()))


@dataclass
class ClientResult:
    """What a client reports after its local training in a round."""

    client_id: int
    head_state: StateDict
    """The client's head weights (parameters and buffers) after training."""
    num_examples: int
    """Training samples the client processed this round (FedAvg weight)."""
    traffic: TrafficStats = field(default_factory=TrafficStats)
    codec_eval_state: StateDict = field(default_factory=dict)
    """What the codec learned that evaluation needs (e.g. ACP-SL's historical scores)."""
    local_stats: ServerStats = field(default_factory=lambda: ServerStats())
    """Loss/accuracy of the client's own prediction (decoupled: the auxiliary head); empty otherwise."""
    train_s: float = 0.0
    """Wall time of the client's training this round, exchanges included (the link model's compute)."""


class FedAvg:
    """Streaming weighted average of state dicts: ``add`` them one at a time, then ``result``.

    Holds one float64 sum, not the states, so averaging N tail copies costs the memory of
    one (SplitFed-v1 frees each copy once it is added). The result depends only on the
    order of the ``add`` calls, not on how they were grouped. Integer entries (BatchNorm
    counters) are rounded back.
    """

    def __init__(self) -> None:
        self.sums: StateDict = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self.total = 0.0
        self.count = 0

    def add(self, state: StateDict, weight: float) -> None:
        if weight < 0:
            raise ValueError(f"weights must be non-negative, got {weight}")
        if self.count and state.keys() != self.sums.keys():
            raise ValueError(f"state keys differ from the first state's: {sorted(set(state) ^ set(self.sums))}")
        for key, value in state.items():
            term = value.detach().double() * float(weight)
            if key in self.sums:
                self.sums[key] += term
            else:
                self.sums[key], self.dtypes[key] = term, value.dtype
        self.total += float(weight)
        self.count += 1

    def result(self) -> StateDict:
        if not self.count:
            raise ValueError("fedavg_states needs at least one state dict")
        if self.total <= 0:
            raise ValueError(f"weights must sum to a positive number, got a total of {self.total}")
        out: StateDict = {}
        for key, acc in self.sums.items():
            mean, dtype = acc / self.total, self.dtypes[key]
            out[key] = mean.to(dtype) if dtype.is_floating_point else mean.round().to(dtype)
        return out


def fedavg_states(states: Sequence[StateDict], weights: Sequence[float]) -> StateDict:
    """Weighted average of state dicts (``FedAvg``); integer entries (BN counters) are rounded back.

    Parameters
    ----------
    states : sequence of dict[str, Tensor]
        State dicts with identical keys and shapes.
    weights : sequence of float
        Non-negative weights, e.g. numbers of examples; they need not sum to one.
    """
    if len(states) != len(weights):
        raise ValueError(f"got {len(states)} states but {len(weights)} weights")
    avg = FedAvg()
    for state, weight in zip(states, weights):
        avg.add(state, weight)
    return avg.result()
