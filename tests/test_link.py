"""The link model against hand computations."""

import math

import pytest

from acp_flower.config import ExperimentConfig
from acp_flower.link import ClientTraffic, LinkOptions, client_rates, comm_s, round_times, sequential_comm_s
from acp_flower.runners.local import run_experiment

LINK = LinkOptions(link_up_mbps=10.0, link_down_mbps=100.0, link_latency_ms=20.0)


def test_blocking_exchange_pays_a_round_trip_per_batch():
    # 4 exchanges, 1 MB up, 2 MB down: 4 x 2 x 20 ms + 8e6 / 10e6 + 16e6 / 100e6
    t = comm_s(LINK, 0, ClientTraffic(0, 4, 1_000_000, 2_000_000), blocking=True)
    assert t == pytest.approx(0.16 + 0.8 + 0.16)


def test_streaming_exchange_pays_one_latency():
    t = comm_s(LINK, 0, ClientTraffic(0, 4, 1_000_000, 0), blocking=False)
    assert t == pytest.approx(0.02 + 0.8)


def test_sequential_clients_add_up_parallel_take_the_slowest():
    clients = [ClientTraffic(0, 1, 1_250_000, 0, compute_s=2.0), ClientTraffic(1, 1, 2_500_000, 0, compute_s=0.5)]
    # comm: 0.04 + 1.0 and 0.04 + 2.0 (down: 0 bytes, still a round trip of latency)
    assert round_times(LINK, 0, clients, blocking=True, parallel=False) == pytest.approx((3.08, 5.58))
    assert round_times(LINK, 0, clients, blocking=True, parallel=True) == pytest.approx((2.04, 3.04))


def test_heterogeneous_rates_are_seeded_log_normal():
    link = LinkOptions(link_heterogeneity=0.5)
    rates = [client_rates(link, 3, c) for c in range(200)]
    assert rates == [client_rates(link, 3, c) for c in range(200)]
    ups = sorted(r[0] for r in rates)
    assert 7e6 < ups[100] < 13e6  # the median client near the configured 10 Mbit/s
    logs = [math.log(r[0] / 10e6) for r in rates]
    assert 0.4 < (sum(x * x for x in logs) / len(logs)) ** 0.5 < 0.6
    assert all(d / u == pytest.approx(10.0) for u, d in rates)  # one factor per client
    assert client_rates(LinkOptions(), 3, 5) == (10e6, 100e6)


def test_a_run_writes_comm_s_from_its_exact_bytes():
    cfg = ExperimentConfig(dataset="synthetic", train_subset=128, test_subset=64, num_clients=2, rounds=1,
                           batch_size=32, codec="standard", link_up_mbps=5.0, link_down_mbps=50.0, link_latency_ms=1.0)
    row = run_experiment(cfg, None, progress=False).iloc[0]
    expected = row["exchanges"] * 2 * 0.001 + 8 * row["bytes_up"] / 5e6 + 8 * row["bytes_down"] / 50e6
    assert row["comm_s"] == pytest.approx(expected) and row["sim_wall_s"] > row["comm_s"]


@pytest.mark.parametrize("changes, key", [
    ({"link_up_mbps": 0}, "link_up_mbps"), ({"link_down_mbps": -1.0}, "link_down_mbps"),
    ({"link_latency_ms": -0.5}, "link_latency_ms"), ({"link_heterogeneity": -0.1}, "link_heterogeneity"),
])
def test_bad_link_settings_name_the_key(changes, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        ExperimentConfig(**changes)


def test_totals_give_the_same_time_as_the_per_client_sum():
    clients = [ClientTraffic(0, 3, 400_000, 900_000), ClientTraffic(1, 5, 700_000, 0), ClientTraffic(2, 2, 1, 1)]
    for blocking in (True, False):
        per_client, _ = round_times(LINK, 0, clients, blocking=blocking, parallel=False)
        totals = sequential_comm_s(LINK, exchanges=10, clients=3, bytes_up=1_100_001, bytes_down=900_001,
                                   blocking=blocking)
        assert totals == pytest.approx(per_client)
