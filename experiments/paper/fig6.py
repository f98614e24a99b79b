#!/usr/bin/env python
"""Fig. 6: ACP-SL pruning ratio adaptive vs fixed vs random (non-IID).

Same options as experiments/reproduce.py (runs: experiments/configs/paper/, panels:
experiments/paper/manifest.toml), e.g. `python experiments/paper/fig6.py --rounds 1 --clients 2`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reproduce import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["--figure", "6", *sys.argv[1:]]))
