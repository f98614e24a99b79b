#!/usr/bin/env python
"""Fig. 4: ACP-SL vs Standard-SL, RandTopk-SL and Quantization-SL on CIFAR-10 / Fashion-MNIST, IID / non-IID.

Same options as experiments/reproduce.py (runs: experiments/configs/paper/, panels:
experiments/paper/manifest.toml), e.g. `python experiments/paper/fig4.py --rounds 1 --clients 2`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reproduce import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["--figure", "4", *sys.argv[1:]]))
