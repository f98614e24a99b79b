"""Client sampling per round (``clients_per_round``): the rule, seeding, and every scheme."""

import pytest

from acp_flower.config import ExperimentConfig
from acp_flower.runners.local import run_experiment
from acp_flower.runtime.stats import ClientResult, ServerStats
from acp_flower.sampling import ClientSampler, resolve_clients_per_round
from strategies import build_strategy

TINY = dict(dataset="synthetic", data_dir="", train_subset=192, test_subset=64, num_clients=6, rounds=3,
            batch_size=32, codec="standard")


@pytest.mark.parametrize("value, expected", [(0, 10), (0.0, 10), (3, 3), (10, 10), (0.25, 2), (1.0, 10),
                                             (0.01, 1)])
def test_count_or_fraction(value, expected):
    assert resolve_clients_per_round(value, 10) == expected


@pytest.mark.parametrize("value, match", [(11, "11 clients per round, but num_clients = 10"),
                                          (-1, "an integer >= 0"), (1.5, r"fraction must be in \(0, 1\]"),
                                          (-0.5, r"fraction must be in \(0, 1\]"), (True, "integer count")])
def test_bad_values_name_the_key(value, match):
    with pytest.raises(ValueError, match="clients_per_round") as err:
        resolve_clients_per_round(value, 10)
    assert err.match(match)


def test_config_checks_and_keeps_the_type():
    assert ExperimentConfig.from_dict({**TINY, "clients_per_round": 0.5}).clients_per_round == 0.5
    assert isinstance(ExperimentConfig.from_dict({**TINY, "clients_per_round": 2}).clients_per_round, int)
    run_config = ExperimentConfig.from_dict({**TINY, "clients_per_round": 0.5}).to_run_config()
    assert ExperimentConfig.from_run_config(run_config).clients_per_round == 0.5
    with pytest.raises(ValueError, match="config key 'clients_per_round'"):
        ExperimentConfig.from_dict({**TINY, "clients_per_round": 7})
    with pytest.raises(ValueError, match="config key 'clients_per_round'"):
        ExperimentConfig.from_dict({**TINY, "clients_per_round": "half"})


def test_sample_is_seeded_per_round_and_a_subset():
    ids = list(range(1000))
    a, b = ClientSampler(100, seed=3), ClientSampler(100, seed=3)
    rounds = [a.ordered(ids, r) for r in range(1, 4)]
    assert rounds == [b.ordered(ids, r) for r in range(1, 4)]
    assert all(len(set(r)) == 100 and set(r) <= set(ids) for r in rounds)
    assert rounds[0] != rounds[1] and rounds[0] != sorted(rounds[0])  # new draw each round, seeded order
    assert a.sample(ids, 1) == sorted(rounds[0])
    assert ClientSampler(100, seed=4).ordered(ids, 1) != rounds[0]
    assert ClientSampler().ordered([2, 0, 1], 5) == [0, 1, 2]  # no sampling: all, id order
    assert (a.size(1000), a.size(50), ClientSampler().size(7)) == (100, 50, 7)


class RecordingExecutor:
    """Executes nothing: records which clients trained against which slot."""

    def __init__(self, n: int) -> None:
        self.client_ids = list(range(n))
        self.calls: list[list[tuple[int, int]]] = []

    def train(self, tasks, *, interleave=False):
        self.calls.append([(t.client_id, t.tail_slot) for t in tasks])
        return [ClientResult(t.client_id, {}, num_examples=10) for t in tasks]

    def get_tail(self, slot):
        return {}

    def set_tail(self, slot, state):
        pass

    def release_tails(self):
        pass

    def pop_server_stats(self):
        return ServerStats()


@pytest.mark.parametrize("scheme", ["vanilla", "splitfed_v1", "splitfed_v2"])
def test_every_scheme_trains_only_the_sample(scheme):
    cfg = ExperimentConfig.from_dict({**TINY, "num_clients": 20, "clients_per_round": 5, "scheme": scheme})
    sampler = ClientSampler.from_config(cfg)
    for server_round in (1, 2):
        executor = RecordingExecutor(20)
        build_strategy(cfg).train_round(server_round, executor)
        trained = [cid for call in executor.calls for cid, _ in call]
        slots = [slot for call in executor.calls for _, slot in call]
        if scheme == "vanilla":  # one client at a time, in the seeded order
            assert trained == sampler.ordered(range(20), server_round) and set(slots) == {0}
        else:
            assert trained == sampler.sample(range(20), server_round)
            assert slots == (list(range(5)) if scheme == "splitfed_v1" else [0] * 5)  # tail copies: 5, not 20


@pytest.mark.parametrize("scheme", ["vanilla", "splitfed_v1", "splitfed_v2"])
def test_local_run_records_the_sample_and_repeats(scheme):
    cfg = ExperimentConfig.from_dict({**TINY, "clients_per_round": 0.5, "scheme": scheme})
    first = run_experiment(cfg, None, progress=False)
    assert first["sampled"].tolist() == [3, 3, 3] and first["clients"].tolist() == [3, 3, 3]
    again = run_experiment(cfg, None, progress=False)
    cols = [c for c in first.columns if c not in ("wall_s", "sim_wall_s")]
    assert first[cols].equals(again[cols])
    everyone = run_experiment(cfg.replace(clients_per_round=0), None, progress=False)
    assert everyone["sampled"].tolist() == [6, 6, 6]
    assert first["exchanges"].sum() < everyone["exchanges"].sum()


def test_splitfed_v1_keeps_tail_copies_only_for_the_sample(monkeypatch):
    from acp_flower.runtime.server import TailSlots

    built = []
    real = TailSlots._new_server
    monkeypatch.setattr(TailSlots, "_new_server", lambda self: built.append(1) or real(self))
    cfg = ExperimentConfig.from_dict({**TINY, "scheme": "splitfed_v1", "clients_per_round": 2,
                                      "splitfed_tails": "persistent"})
    frame = run_experiment(cfg, None, progress=False)
    assert len(frame) == 3 and len(built) == 2  # 3 rounds x 2 of 6 clients, but 2 tail copies
    built.clear()
    run_experiment(cfg.replace(clients_per_round=0), None, progress=False)
    assert len(built) == 6
