"""Abstract split-learning strategy: owns the round loop; drivers supply an `Executor`."""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

from acp_flower.guard import NonFiniteError
from acp_flower.runtime.protocol import ClientTask, EvaluateFn, Executor, RoundOutcome, StateDict
from acp_flower.runtime.stats import ClientResult, fedavg_states
from acp_flower.sampling import ClientSampler

__all__ = ["ClientTask", "EvaluateFn", "Executor", "RoundOutcome", "SLStrategy", "weighted_average"]


class SLStrategy(ABC):
    """Base class of split-learning schemes (template method, as Flower's `Strategy.start`).

    Subclasses implement `train_round`; the base class holds the global client model
    (head), the global tail and the codec state used for evaluation, and owns the round loop.
    ``sampler`` picks each round's clients (config ``clients_per_round``; default: all).
    """

    name: ClassVar[str] = "base"
    parallel: ClassVar[bool] = False
    """Clients of a round train at the same time (SplitFed) instead of one after another:
    the link model then takes the slowest client's time instead of the sum."""

    def __init__(self, sampler: ClientSampler | None = None) -> None:
        self.sampler = sampler or ClientSampler()
        self.head_state: StateDict = {}
        self.tail_state: StateDict = {}
        self.codec_eval_state: StateDict = {}

    @classmethod
    def from_config(cls, cfg) -> SLStrategy:
        """The strategy of a run config; a scheme with keys of its own overrides this."""
        return cls(ClientSampler.from_config(cfg))

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
            if not results:  # every client failed and was skipped: a row would hold no result
                raise RuntimeError(f"round {server_round}: no client finished the round (every client failed)")
            outcome = RoundOutcome(server_round, results, executor.pop_server_stats(), parallel=self.parallel,
                                   sampled=self.sampler.size(len(executor.client_ids)))
            outcome.evaluation = evaluate_fn(self.head_state, self.tail_state, self.codec_eval_state)
            for key in ("test_loss", "aux_test_loss"):  # a NaN must not reach metrics.csv as a result
                if not math.isfinite(outcome.evaluation.get(key, 0.0)):
                    raise NonFiniteError(f"round {server_round}: the global model's {key} is not finite "
                                         "(diverged? lower the learning rate)", key)
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
