"""SplitFed-v2: parallel clients sharing one tail, updated over their batches in turn."""

from __future__ import annotations

from acp_flower.runtime.stats import ClientResult
from strategies.base import ClientTask, Executor, SLStrategy, weighted_average


class SplitFedV2Strategy(SLStrategy):
    """SplitFed v2 (Thapa et al., AAAI 2022, arXiv 2004.12088).

    Every client of the round (all, or the ``clients_per_round`` sample) starts from the
    global head; the server keeps one tail and processes the clients' batches round-robin
    (batch 0 of each client in id order, then batch 1, ...). At round end the heads and
    codec evaluation states are FedAvg-ed.
    """

    name = "splitfed_v2"
    parallel = True

    def train_round(self, server_round: int, executor: Executor) -> list[ClientResult]:
        tasks = [ClientTask(cid, server_round, self.head_state, 0)
                 for cid in self.sampler.sample(executor.client_ids, server_round)]
        results = executor.train(tasks, interleave=True)
        if results:
            self.head_state = weighted_average(results, "head_state")
            self.codec_eval_state = weighted_average(results, "codec_eval_state")
        self.tail_state = executor.get_tail(0)
        return results
