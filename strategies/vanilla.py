"""Vanilla (sequential) split learning: clients train one at a time, handing the head on."""

from __future__ import annotations

from acp_flower.runtime.stats import ClientResult
from strategies.base import ClientTask, Executor, SLStrategy


class VanillaStrategy(SLStrategy):
    """Sequential SL (Gupta & Raskar, 2018; the ACP-SL paper's setup, arXiv 2603.09792).

    In each round the clients train in id order against one shared tail (with
    ``clients_per_round``: the round's sample, in a seeded order); each client starts from
    the head the previous client left. The round's global model is the last
    client's head with the shared tail; evaluation uses that client's codec state.
    """

    name = "vanilla"

    def train_round(self, server_round: int, executor: Executor) -> list[ClientResult]:
        results: list[ClientResult] = []
        for cid in self.sampler.ordered(executor.client_ids, server_round):
            for result in executor.train([ClientTask(cid, server_round, self.head_state, 0)]):
                self.head_state = result.head_state
                self.codec_eval_state = result.codec_eval_state
                results.append(result)
        self.tail_state = executor.get_tail(0)
        return results
