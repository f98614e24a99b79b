"""SplitFed-v1: parallel clients, one tail copy each, heads and tails FedAvg-ed per round."""

from __future__ import annotations

from acp_flower.config import SPLITFED_TAILS
from acp_flower.runtime.stats import ClientResult, FedAvg
from acp_flower.sampling import ClientSampler
from strategies.base import ClientTask, Executor, SLStrategy, weighted_average


class SplitFedV1Strategy(SLStrategy):
    """SplitFed v1 (Thapa et al., AAAI 2022, arXiv 2004.12088).

    Every client of the round (all, or the ``clients_per_round`` sample) starts from the
    global head and trains against its own copy of the global tail. At round end the heads,
    the tail copies and the codecs' evaluation states are each FedAvg-ed (weights = examples).

    ``tails='fresh'`` (default): the sample trains in groups of ``group_size`` clients
    (slot = position in the group); every copy starts from the global tail with a new
    optimizer state and is freed once averaged in, so the server never holds more than
    ``group_size`` copies. The groups run one after another, the averaging is streamed in
    client order, and so the result does not depend on ``group_size``.
    ``tails='persistent'``: slot = position in the round's sample, and each slot's copy
    and optimizer state live for the whole run (FedAvg replaces weights only).
    """

    name = "splitfed_v1"
    parallel = True

    def __init__(self, sampler: ClientSampler | None = None, *, tails: str = "fresh", group_size: int = 8) -> None:
        super().__init__(sampler)
        if tails not in SPLITFED_TAILS:
            raise ValueError(f"config key 'splitfed_tails': unknown value {tails!r}; allowed: {', '.join(SPLITFED_TAILS)}")
        if group_size < 1:
            raise ValueError(f"config key 'splitfed_group_size': {group_size}; expected an integer >= 1")
        self.tails, self.group_size = tails, group_size

    @classmethod
    def from_config(cls, cfg) -> SplitFedV1Strategy:
        return cls(ClientSampler.from_config(cfg), tails=cfg.splitfed_tails, group_size=cfg.splitfed_group_size)

    def groups(self, sample: list[int]) -> list[list[int]]:
        """The round's sample split into the groups that train at once."""
        width = len(sample) if self.tails == "persistent" else self.group_size
        return [sample[i:i + width] for i in range(0, len(sample), width)]

    def train_round(self, server_round: int, executor: Executor) -> list[ClientResult]:
        results: list[ClientResult] = []
        tails = FedAvg()
        for group in self.groups(self.sampler.sample(executor.client_ids, server_round)):
            for slot in range(len(group)):
                executor.set_tail(slot, self.tail_state)
            done = executor.train([ClientTask(cid, server_round, self.head_state, slot)
                                   for slot, cid in enumerate(group)])
            for r in done:
                tails.add(executor.get_tail(group.index(r.client_id)), r.num_examples)
            if self.tails == "fresh":
                executor.release_tails()
            results += done
        if results:
            self.head_state = weighted_average(results, "head_state")
            self.codec_eval_state = weighted_average(results, "codec_eval_state")
            self.tail_state = tails.result()
        return results
