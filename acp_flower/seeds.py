"""Independent random streams derived from a run's seed (one per purpose, client, round)."""

from __future__ import annotations

import numpy as np


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 63-bit seed for a (seed, keys...) stream (e.g. a client's round).

    Streams in use (first key): 0 model init, 1 codec, 2 client RNG, 3 batch order,
    4 train subset, 5 test subset, 6 BatchNorm calibration draw, 7 link rates,
    8 auxiliary-head init, 9 activation dropout, 10 client sampling.
    """
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint64)[0] >> 1)
