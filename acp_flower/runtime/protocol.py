"""The contract between strategies and drivers: tasks, the executor, tail stores, round outcomes.

Strategies (``strategies/``) decide which client trains when and against which tail copy;
drivers (the local runner, the Flower apps) carry the work out. Both sides import these
types from here, so the core never needs to import either of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from acp_flower.runtime.stats import ClientResult, ServerStats

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ClientTask:
    """One client's work for a round."""

    client_id: int
    """Which client trains."""
    server_round: int
    """1-based round index (seeds the client's shuffling and augmentation)."""
    head_state: StateDict | None
    """Client-model weights to load before training; None keeps the client's own."""
    tail_slot: int = 0
    """Which server-side tail copy this client trains against."""


class TailStore(Protocol):
    """Whatever holds the server's tail copies, one per slot (``TailSlots``, the Ray tail actor).

    ``step`` answers one upload (wire-protocol bytes) with the reply bytes; a slot is
    created on first use. ``pop_stats`` returns the training totals since the last call;
    ``state_dict`` / ``load_state_dict`` save and restore every slot with its optimizer.
    """

    def step(self, slot: int, up: bytes) -> bytes: ...

    def get(self, slot: int) -> StateDict: ...

    def set(self, slot: int, state: StateDict) -> None: ...

    def pop_stats(self) -> ServerStats: ...

    def clear(self) -> None:
        """Free every tail copy and its optimizer state (their totals stay for ``pop_stats``)."""
        ...

    def state_dict(self) -> dict[int, dict[str, StateDict]]:
        """Every slot's tail and optimizer state, by slot (checkpoints)."""
        ...

    def load_state_dict(self, state: dict[int, dict[str, StateDict]]) -> None: ...


class Executor(Protocol):
    """What a driver (local, Flower messages, Ray actor) must provide to a strategy.

    Tasks given in one `train` call that use distinct tail slots are independent and may
    run in parallel. With ``interleave=True`` all tasks share one slot and the server
    processes their batches round-robin in task order (``runtime.schedule.RoundRobin``);
    drivers must reproduce that order exactly.
    """

    client_ids: Sequence[int]

    def train(self, tasks: Sequence[ClientTask], *, interleave: bool = False) -> list[ClientResult]: ...

    def get_tail(self, slot: int) -> StateDict: ...

    def set_tail(self, slot: int, state: StateDict) -> None: ...

    def release_tails(self) -> None:
        """Free every tail copy and its optimizer; a slot used next starts with a fresh optimizer."""
        ...

    def pop_server_stats(self) -> ServerStats: ...


class TailStoreExecutor:
    """The tail half of the ``Executor`` protocol, for executors whose tails are a ``TailStore``."""

    tails: TailStore

    def get_tail(self, slot: int) -> StateDict:
        return self.tails.get(slot)

    def set_tail(self, slot: int, state: StateDict) -> None:
        self.tails.set(slot, state)

    def release_tails(self) -> None:
        self.tails.clear()

    def pop_server_stats(self) -> ServerStats:
        return self.tails.pop_stats()


EvaluateFn = Callable[[StateDict, StateDict, StateDict], dict[str, float]]
"""``evaluate(head_state, tail_state, codec_eval_state)`` -> metrics (``test_accuracy``, ...)."""


@dataclass
class RoundOutcome:
    """What one round produced."""

    server_round: int
    results: list[ClientResult]
    server_stats: ServerStats
    parallel: bool = False
    """The round's clients trained in parallel (SplitFed) rather than one after another."""
    sampled: int = 0
    """Clients drawn for the round (``clients_per_round``); ``len(results)`` of them finished."""
    evaluation: dict[str, float] = field(default_factory=dict)
    """What the evaluator measured on the global model (``test_accuracy``, ``test_loss``, ...)."""
    wall_s: float = 0.0

    @property
    def test_accuracy(self) -> float:
        return self.evaluation.get("test_accuracy", float("nan"))

    @property
    def test_loss(self) -> float:
        return self.evaluation.get("test_loss", float("nan"))
