"""Which clients take part in a round (config key ``clients_per_round``), seeded per round.

The sample is a function of (seed, round, client ids) only, so every driver (the local
runner, ``flwr run`` on either transport) and a resumed run draw the same clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from acp_flower.seeds import derive_seed

SAMPLE_STREAM = 10
"""First key of the sampling stream in ``derive_seed`` (see its list)."""


def resolve_clients_per_round(clients_per_round: int | float, num_clients: int) -> int:
    """How many of ``num_clients`` clients train per round.

    An integer is a count (0 = all); a float is a fraction of ``num_clients`` in (0, 1]
    (rounded, at least one client; 0.0 = all). Raises ``ValueError`` naming
    ``clients_per_round`` for anything else, or for a count above ``num_clients``.
    """
    key = "config key 'clients_per_round'"
    if isinstance(clients_per_round, bool):
        raise ValueError(f"{key}: expected an integer count or a fraction, got {clients_per_round!r}")
    if isinstance(clients_per_round, float):
        if clients_per_round == 0.0:
            return num_clients
        if not 0.0 < clients_per_round <= 1.0:
            raise ValueError(f"{key}: invalid value {clients_per_round!r}; a fraction must be in (0, 1] "
                             "(an integer is a count of clients, 0 = all)")
        return max(1, round(clients_per_round * num_clients))
    if clients_per_round < 0:
        raise ValueError(f"{key}: invalid value {clients_per_round}; expected an integer >= 0 (0 = all) or a "
                         "fraction in (0, 1]")
    if clients_per_round > num_clients:
        raise ValueError(f"{key}: {clients_per_round} clients per round, but num_clients = {num_clients}")
    return clients_per_round or num_clients


@dataclass(frozen=True)
class ClientSampler:
    """Draws each round's clients: all of them in id order, or ``count`` of them, seeded.

    ``ordered`` returns the sample in a seeded random order (vanilla SL visits clients in
    it); ``sample`` returns it sorted by id (SplitFed: the order does not matter, and id
    order keeps tail slots and the round-robin turn order deterministic).
    """

    count: int = 0
    """Clients per round; 0 = every client, every round, in id order (no sampling)."""
    seed: int = 0

    @classmethod
    def from_config(cls, cfg) -> ClientSampler:
        """The sampler of a run config (``clients_per_round``, ``num_clients``, ``seed``)."""
        count = resolve_clients_per_round(cfg.clients_per_round, cfg.num_clients)
        return cls(0 if count == cfg.num_clients else count, cfg.seed)

    def size(self, num_clients: int) -> int:
        """How many of ``num_clients`` clients each round draws (without drawing them)."""
        return min(self.count, num_clients) if self.count else num_clients

    def ordered(self, client_ids: Sequence[int], server_round: int) -> list[int]:
        """This round's clients in the order they train (seeded), or all ids in order."""
        ids = sorted(client_ids)
        if self.size(len(ids)) == len(ids):
            return ids
        rng = np.random.default_rng(derive_seed(self.seed, SAMPLE_STREAM, server_round))
        return [ids[i] for i in rng.permutation(len(ids))[: self.count]]

    def sample(self, client_ids: Sequence[int], server_round: int) -> list[int]:
        """This round's clients sorted by id."""
        return sorted(self.ordered(client_ids, server_round))
