"""Abstract split-learning strategy: owns the round loop; drivers supply an `Executor`."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from acp_flower.runtime.stats import ClientResult, ServerStats, fedavg_states

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ClientTask:
    """One client's work for a round."""

    client_id: int
    """Which client trains."""
    server_round: int
    """1-based round index (seeds the client's shuffling and augmentation)."""
    head_state: StateDict | None
    """Head weights to load before training; None keeps the client's own head."""
    tail_slot: int = 0
    """Which server-side tail copy this client trains against."""


class Executor(Protocol):
    """What a driver (local, Flower messages, Ray actor) must provide to a strategy.

    Tasks given in one `train` call that use distinct tail slots are independent and may
    run in parallel. With ``interleave=True`` all tasks share one slot and the server
    processes their batches round-robin in task order (batch 0 of each client, then
    batch 1, ...); drivers must reproduce that order exactly.
    """

    client_ids: Sequence[int]

    def train(self, tasks: Sequence[ClientTask], *, interleave: bool = False) -> list[ClientResult]: ...

    def get_tail(self, slot: int) -> StateDict: ...

    def set_tail(self, slot: int, state: StateDict) -> None: ...

    def pop_server_stats(self) -> ServerStats: ...


EvaluateFn = Callable[[StateDict, StateDict, StateDict], tuple[float, float]]


@dataclass
class RoundOutcome:
    """What one round produced, before evaluation."""

    server_round: int
    results: list[ClientResult]
    server_stats: ServerStats
    test_accuracy: float = float("nan")
    test_loss: float = float("nan")
    wall_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class SLStrategy(ABC):
    """Base class of split-learning schemes (template method, as Flower's `Strategy.start`).

    Subclasses implement `train_round`; the base class holds the global head, the global
    tail and the codec state used for evaluation, and owns the round loop.
    """

    name: str = "base"

    def __init__(self) -> None:
        self.head_state: StateDict = {}
        self.tail_state: StateDict = {}
        self.codec_eval_state: StateDict = {}

    def initialize(self, executor: Executor, head_state: StateDict, tail_state: StateDict) -> None:
        """Set the initial global model and push the tail into slot 0."""
        self.head_state = head_state
        self.tail_state = tail_state
        executor.set_tail(0, tail_state)

    def state_dict(self) -> dict[str, StateDict]:
        """The global model and codec evaluation state (what a resumed run starts from)."""
        return {"head": self.head_state, "tail": self.tail_state, "codec_eval": self.codec_eval_state}

    def load_state_dict(self, state: dict[str, StateDict]) -> None:
        self.head_state, self.tail_state = state["head"], state["tail"]
        self.codec_eval_state = state["codec_eval"]

    @abstractmethod
    def train_round(self, server_round: int, executor: Executor) -> list[ClientResult]:
        """Train one round; update ``head_state``, ``tail_state`` and ``codec_eval_state``."""

    def start(
        self,
        executor: Executor,
        num_rounds: int,
        evaluate_fn: EvaluateFn,
        on_round_end: Callable[[RoundOutcome], None] | None = None,
        first_round: int = 1,
        stop_accuracy: float = 0.0,
    ) -> list[RoundOutcome]:
        """Run rounds ``first_round..num_rounds``: train, evaluate the global model, report.

        With ``stop_accuracy > 0`` the loop ends after the first round whose test accuracy
        reaches it (rounds-to-target studies need not pay for the rounds after the target).
        """
        outcomes = []
        for server_round in range(first_round, num_rounds + 1):
            t0 = time.perf_counter()
            results = self.train_round(server_round, executor)
            outcome = RoundOutcome(server_round, results, executor.pop_server_stats())
            outcome.test_accuracy, outcome.test_loss = evaluate_fn(
                self.head_state, self.tail_state, self.codec_eval_state
            )
            outcome.wall_s = time.perf_counter() - t0
            outcomes.append(outcome)
            if on_round_end is not None:
                on_round_end(outcome)
            if stop_accuracy > 0 and outcome.test_accuracy >= stop_accuracy:
                break
        return outcomes


def weighted_average(results: Sequence[ClientResult], attr: str) -> StateDict:
    """FedAvg of one state attribute of the results, weighted by the clients' examples."""
    return fedavg_states([getattr(r, attr) for r in results], [r.num_examples for r in results])
