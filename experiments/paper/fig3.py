#!/usr/bin/env python
"""Fig. 3: instantaneous vs historical vs combined channel score at pruning ratio 0.99.

Same options as experiments/reproduce.py (runs: experiments/configs/paper/, panels:
experiments/paper/manifest.toml), e.g. `python experiments/paper/fig3.py --rounds 1 --clients 2`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reproduce import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["--figure", "3", *sys.argv[1:]]))
