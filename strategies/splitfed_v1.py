"""SplitFed-v1: parallel clients, one tail copy each, heads and tails FedAvg-ed per round."""

from __future__ import annotations

from acp_flower.runtime.stats import ClientResult, fedavg_states
from strategies.base import ClientTask, Executor, SLStrategy, weighted_average


class SplitFedV1Strategy(SLStrategy):
    """SplitFed v1 (Thapa et al., AAAI 2022, arXiv 2004.12088).

    Every client of the round (all, or the ``clients_per_round`` sample) starts from the
    global head and trains against its own copy of the global tail (slot = position of the
    client in the round's sample). At round end the heads, the tail
    copies and the codecs' evaluation states are each FedAvg-ed (weights = examples).
    Optimizer state persists per client and per tail slot; FedAvg replaces weights only.
    """

    name = "splitfed_v1"
    parallel = True

    def train_round(self, server_round: int, executor: Executor) -> list[ClientResult]:
        slots = {cid: slot for slot, cid in enumerate(self.sampler.sample(executor.client_ids, server_round))}
        for slot in slots.values():
            executor.set_tail(slot, self.tail_state)
        results = executor.train([ClientTask(cid, server_round, self.head_state, slot) for cid, slot in slots.items()])
        if results:
            self.head_state = weighted_average(results, "head_state")
            self.codec_eval_state = weighted_average(results, "codec_eval_state")
            tails = [executor.get_tail(slots[r.client_id]) for r in results]
            self.tail_state = fedavg_states(tails, [r.num_examples for r in results])
        return results
