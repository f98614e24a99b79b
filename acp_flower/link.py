"""A link model: how long a round's exchanges would take on a real network.

Every client has an up-link and a down-link rate and a one-way latency. The rates of
client c are the configured ones times exp(sigma * z_c), z_c a seeded standard normal
(``link_heterogeneity`` = sigma; 0 = every client alike, and the configured rates are
the median otherwise). A message of n bytes takes latency + 8 n / rate.

- A blocking exchange (backprop: the client waits for the gradient) costs a round trip
  per mini-batch: 2 x latency + up transfer + down transfer.
- A non-blocking one (decoupled: nothing comes back) streams its uploads: the client's
  up transfers add up and one latency is paid for the last upload to arrive.

A round's communication time is the sum over its clients when they train one after
another (vanilla SL) and the slowest client's when they train in parallel (SplitFed);
``sim_wall_s`` adds each client's measured compute time (``ClientResult.train_s``) to its
communication time and combines them the same way. Only the per-batch payloads are
counted (as in ``bytes_up``/``bytes_down``); model transfers between rounds are not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from acp_flower.options import check, declare_options
from acp_flower.seeds import derive_seed


@dataclass(frozen=True)
class LinkOptions:
    """Options of the link model (in effect in every run; they change no training)."""

    link_up_mbps: float = 10.0
    """Client -> server rate, Mbit/s (median client)."""
    link_down_mbps: float = 100.0
    """Server -> client rate, Mbit/s (median client)."""
    link_latency_ms: float = 10.0
    """One-way latency of every message, ms."""
    link_heterogeneity: float = 0.0
    """Sigma of the log-normal spread of rates across clients (0 = identical clients)."""

    def __post_init__(self) -> None:
        check("link_up_mbps", self.link_up_mbps > 0, "a rate > 0 (Mbit/s)")
        check("link_down_mbps", self.link_down_mbps > 0, "a rate > 0 (Mbit/s)")
        check("link_latency_ms", self.link_latency_ms >= 0, "a latency >= 0 (ms)")
        check("link_heterogeneity", self.link_heterogeneity >= 0, "a log-normal sigma >= 0")


declare_options(LinkOptions, name="link")


@dataclass(frozen=True)
class ClientTraffic:
    """What one client sent and received in a round, and how long its compute took."""

    client_id: int
    exchanges: int
    bytes_up: int
    bytes_down: int
    compute_s: float = 0.0


def client_rates(link: LinkOptions, seed: int, client_id: int) -> tuple[float, float]:
    """(up, down) rates of a client in bit/s."""
    factor = 1.0
    if link.link_heterogeneity > 0:
        z = np.random.default_rng(derive_seed(seed, 7, client_id)).standard_normal()
        factor = math.exp(link.link_heterogeneity * z)
    return link.link_up_mbps * 1e6 * factor, link.link_down_mbps * 1e6 * factor


def comm_s(link: LinkOptions, seed: int, traffic: ClientTraffic, blocking: bool) -> float:
    """Simulated communication time of one client's round (see the module docstring)."""
    if traffic.exchanges == 0:
        return 0.0
    up, down = client_rates(link, seed, traffic.client_id)
    latency = link.link_latency_ms / 1e3
    transfer = 8 * traffic.bytes_up / up + 8 * traffic.bytes_down / down
    return transfer + (2 * latency * traffic.exchanges if blocking else latency)


def round_times(link: LinkOptions, seed: int, clients: Sequence[ClientTraffic], *, blocking: bool,
                parallel: bool) -> tuple[float, float]:
    """(comm_s, sim_wall_s) of a round: summed over sequential clients, the slowest of parallel ones."""
    comm = [comm_s(link, seed, c, blocking) for c in clients]
    wall = [c.compute_s + t for c, t in zip(clients, comm)]
    if not clients:
        return 0.0, 0.0
    return (max(comm), max(wall)) if parallel else (math.fsum(comm), math.fsum(wall))


def sequential_comm_s(link: LinkOptions, *, exchanges: int, clients: int, bytes_up: int, bytes_down: int,
                      blocking: bool) -> float:
    """``comm_s`` of a round of clients training one after another on identical links, from its
    totals (the metrics.csv columns): what ``round_times`` gives when ``link_heterogeneity = 0``.

    For re-pricing a finished run under another link setting.
    """
    if link.link_heterogeneity:
        raise ValueError("sequential_comm_s needs identical links (link_heterogeneity = 0)")
    latency = link.link_latency_ms / 1e3
    transfer = 8 * bytes_up / (link.link_up_mbps * 1e6) + 8 * bytes_down / (link.link_down_mbps * 1e6)
    return transfer + (2 * latency * exchanges if blocking else latency * clients)
