"""Memory bounded by what is active: SplitFed-v1 tail copies exist only for the clients
training now, and idle clients' state does not grow with rounds (issue 15, item 2)."""

import gc
import weakref

import pytest
import torch

from acp_flower.config import ExperimentConfig
from acp_flower.runners import local
from acp_flower.runners.local import run_experiment
from acp_flower.runtime import ClientRuntime, ServerRuntime

TINY = dict(dataset="synthetic", data_dir="", train_subset=192, test_subset=64, num_clients=6, rounds=3,
            batch_size=32, codec="acp", optimizer="adam", lr=1e-3, scheme="splitfed_v1")


def _state_bytes(state) -> int:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_state_bytes(v) for v in state)
    return 0


def _watch(monkeypatch, cls) -> weakref.WeakSet:
    alive = weakref.WeakSet()
    real = cls.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        alive.add(self)

    monkeypatch.setattr(cls, "__init__", init)
    return alive


def test_fresh_tails_live_only_while_their_group_trains(monkeypatch):
    tails, clients = _watch(monkeypatch, ServerRuntime), _watch(monkeypatch, ClientRuntime)
    seen = []  # (tail copies in the store, live tail runtimes, live clients, bytes of every client's state)
    real_train = local.LocalExecutor.train

    def train(self, tasks, **kwargs):
        gc.collect()
        seen.append((len(self.tails), len(tails), len(clients),
                     sum(_state_bytes(c.state_dict()) for c in self.clients.values())))
        return real_train(self, tasks, **kwargs)

    monkeypatch.setattr(local.LocalExecutor, "train", train)
    run_experiment(ExperimentConfig.from_dict({**TINY, "splitfed_group_size": 2}), None, progress=False)
    assert len(seen) == 3 * 3  # 3 rounds x 3 groups of 2 clients
    assert max(s[0] for s in seen) == 2  # never more tail copies than the group
    assert max(s[1] for s in seen) <= 2 + 1  # and no other tail runtime alive but the template copies come from
    assert {s[2] for s in seen} == {6}  # one client object per client, none per round
    # every client's state (head, optimizer, codec, RNG) is as big after 3 rounds as after 1
    assert seen[3][3] == seen[-1][3]
    gc.collect()
    assert len(tails) <= 1  # the template at most; no copy outlives its group


def test_persistent_tails_keep_one_copy_per_slot(monkeypatch):
    tails = _watch(monkeypatch, ServerRuntime)
    executors = []
    real_init = local.LocalExecutor.__init__

    def init(self, *args):
        real_init(self, *args)
        executors.append(self)

    monkeypatch.setattr(local.LocalExecutor, "__init__", init)
    run_experiment(ExperimentConfig.from_dict({**TINY, "splitfed_tails": "persistent"}), None, progress=False)
    assert len(executors[0].tails) == 6 and len(tails) >= 6


@pytest.mark.parametrize("group_size", [1, 4])
def test_fresh_tails_give_the_same_metrics_for_any_group_size(group_size):
    cfg = ExperimentConfig.from_dict({**TINY, "rounds": 2})
    ref = run_experiment(cfg, None, progress=False)  # default group: all 6 at once
    other = run_experiment(cfg.replace(splitfed_group_size=group_size), None, progress=False)
    cols = [c for c in ref.columns if c not in ("wall_s", "sim_wall_s")]
    assert ref[cols].equals(other[cols])
