#!/usr/bin/env python
"""Eq. (10) as written (literal, 0/0) vs the intra/inter ratio group score (CIFAR-10 non-IID).

Same options as experiments/reproduce.py (runs: experiments/configs/paper/, panels:
experiments/paper/manifest.toml), e.g. `python experiments/paper/eq10.py --rounds 1 --clients 2`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reproduce import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["--figure", "eq10", *sys.argv[1:]]))
