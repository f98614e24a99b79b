"""Strategies against a fake executor: who trains when, and FedAvg checked by hand."""

from __future__ import annotations

import pytest
import torch

from acp_flower.runtime import ClientResult, ClientTask, ServerStats
from strategies import get_strategy, list_strategies
from strategies.splitfed_v1 import SplitFedV1Strategy
from strategies.splitfed_v2 import SplitFedV2Strategy
from strategies.vanilla import VanillaStrategy


class FakeExecutor:
    """Each client returns its head state = the task's head + its id, its examples = given;
    training moves the tail of its slot by the client id."""

    def __init__(self, examples: dict[int, int]) -> None:
        self.client_ids = sorted(examples)
        self.examples = examples
        self.tails: dict[int, dict] = {}
        self.calls: list[tuple[list[ClientTask], bool]] = []

    def train(self, tasks, *, interleave=False):
        self.calls.append((list(tasks), interleave))
        results = []
        for t in tasks:
            head = {"w": t.head_state["w"] + t.client_id}
            self.tails[t.tail_slot] = {"v": self.tails[t.tail_slot]["v"] + t.client_id}
            results.append(ClientResult(t.client_id, head, self.examples[t.client_id],
                                        codec_eval_state={"s": torch.tensor([float(t.client_id)])}))
        return results

    def get_tail(self, slot):
        return self.tails[slot]

    def set_tail(self, slot, state):
        self.tails[slot] = dict(state)

    def release_tails(self):
        self.released = getattr(self, "released", 0) + 1
        self.tails.clear()

    def pop_server_stats(self):
        return ServerStats()


def _prepare(cls, examples, **kwargs):
    executor = FakeExecutor(examples)
    strategy = cls(**kwargs)
    strategy.initialize(executor, {"w": torch.tensor([1.0, 2.0])}, {"v": torch.tensor([10.0])})
    return strategy, executor


def test_registry_finds_every_strategy_module():
    assert list_strategies() == ["splitfed_v1", "splitfed_v2", "vanilla"]
    assert get_strategy("vanilla") is VanillaStrategy


def test_vanilla_hands_the_head_on_in_id_order():
    # Prepare
    strategy, executor = _prepare(VanillaStrategy, {0: 10, 1: 30})
    # Execute
    strategy.train_round(1, executor)
    # Assert: client 1 starts from client 0's head; one shared tail (slot 0) moved by both
    assert [c[0][0].client_id for c in executor.calls] == [0, 1]
    assert torch.equal(executor.calls[1][0][0].head_state["w"], torch.tensor([1.0, 2.0]))
    assert torch.equal(strategy.head_state["w"], torch.tensor([2.0, 3.0]))  # 1 + 0 + 1
    assert torch.equal(strategy.tail_state["v"], torch.tensor([11.0]))
    assert torch.equal(strategy.codec_eval_state["s"], torch.tensor([1.0]))  # the last client's
    assert not strategy.parallel


def test_splitfed_v1_fedavg_of_heads_tails_and_codec_states():
    # Prepare: clients 0, 1, 2 with 10, 30, 60 examples
    strategy, executor = _prepare(SplitFedV1Strategy, {0: 10, 1: 30, 2: 60})
    # Execute
    strategy.train_round(1, executor)
    # Assert: one parallel call, a tail slot per client, each from the global tail
    [(tasks, interleave)] = executor.calls
    assert [t.tail_slot for t in tasks] == [0, 1, 2] and not interleave
    # heads 1+c, 2+c averaged with weights 0.1, 0.3, 0.6: 1 + (0*.1 + 1*.3 + 2*.6) = 2.5
    assert torch.allclose(strategy.head_state["w"], torch.tensor([2.5, 3.5]))
    assert torch.allclose(strategy.tail_state["v"], torch.tensor([11.5]))  # 10 + 1.5
    assert torch.allclose(strategy.codec_eval_state["s"], torch.tensor([1.5]))
    assert strategy.parallel


@pytest.mark.parametrize("group_size", [1, 2, 3, 8])
def test_splitfed_v1_fresh_tails_train_in_groups_with_the_same_average(group_size):
    strategy, executor = _prepare(SplitFedV1Strategy, {0: 10, 1: 30, 2: 60}, group_size=group_size)
    strategy.train_round(1, executor)
    groups = [[(t.client_id, t.tail_slot) for t in tasks] for tasks, _ in executor.calls]
    expected = [[(c, c % group_size) for c in range(i, min(3, i + group_size))] for i in range(0, 3, group_size)]
    assert groups == expected and executor.released == len(expected)  # copies freed after every group
    assert executor.tails == {}
    assert torch.equal(strategy.tail_state["v"], torch.tensor([11.5]))  # exactly, whatever the grouping
    assert torch.allclose(strategy.head_state["w"], torch.tensor([2.5, 3.5]))


def test_splitfed_v1_persistent_tails_keep_one_slot_per_client():
    strategy, executor = _prepare(SplitFedV1Strategy, {0: 10, 1: 30, 2: 60}, tails="persistent", group_size=1)
    strategy.train_round(1, executor)
    [(tasks, _)] = executor.calls
    assert [t.tail_slot for t in tasks] == [0, 1, 2] and not hasattr(executor, "released")
    assert sorted(executor.tails) == [0, 1, 2]
    assert torch.allclose(strategy.tail_state["v"], torch.tensor([11.5]))


@pytest.mark.parametrize("kwargs, match", [(dict(tails="kept"), "splitfed_tails"),
                                           (dict(group_size=0), "splitfed_group_size")])
def test_splitfed_v1_bad_options_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SplitFedV1Strategy(**kwargs)


def test_splitfed_v2_interleaves_on_one_tail_and_averages_heads():
    strategy, executor = _prepare(SplitFedV2Strategy, {0: 1, 1: 1})
    strategy.train_round(1, executor)
    [(tasks, interleave)] = executor.calls
    assert interleave and {t.tail_slot for t in tasks} == {0}
    assert torch.allclose(strategy.head_state["w"], torch.tensor([1.5, 2.5]))  # plain mean of +0, +1
    assert torch.equal(strategy.tail_state["v"], torch.tensor([11.0]))  # the shared tail, moved by both


def test_fedavg_rounds_integer_buffers():
    from acp_flower.runtime import fedavg_states

    out = fedavg_states([{"n": torch.tensor(3)}, {"n": torch.tensor(4)}], [1, 1])
    assert out["n"].dtype == torch.int64 and int(out["n"]) == 4  # torch.round: half to even
    with pytest.raises(ValueError, match="positive"):
        fedavg_states([{"n": torch.tensor(1.0)}], [0])
