"""SplitFed-v1 tail copies, 'persistent' (one tail + optimizer per slot, the old behaviour)
vs 'fresh' (a new copy and optimizer per client each round, freed after its group):
does accuracy change on the 5-client runs? (issue 15, item 2)

    python experiments/splitfed_tails.py --out experiments/results/scale/splitfed_tails [--seeds 0 1]

Each (mode, seed) is one local run (``run_experiment``, resumable with its checkpoint),
two at a time with one torch thread each; prints and writes ``table.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

BASE = dict(dataset="fashion-mnist", partition="iid", num_clients=5, scheme="splitfed_v1", rounds=10,
            train_subset=6000, test_subset=2000, batch_size=128, optimizer="adam", lr=1e-3, codec="acp")
MODES = ("persistent", "fresh")


def run_one(out: Path, mode: str, seed: int, data_dir: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "acp_flower.cli", "run", "--out", str(out / f"{mode}_seed{seed}"), "--resume",
           "--no-progress"]
    for key, value in {**BASE, "splitfed_tails": mode, "seed": seed, "data_dir": data_dir}.items():
        cmd += ["--set", f"{key}={value}"]
    return subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})


def table(out: Path, seeds: list[int]) -> pd.DataFrame:
    rows = []
    for mode in MODES:
        for seed in seeds:
            m = pd.read_csv(out / f"{mode}_seed{seed}" / "metrics.csv")
            rows.append({"splitfed_tails": mode, "seed": seed, "final_test_accuracy": m["test_accuracy"].iloc[-1],
                         "best_test_accuracy": m["test_accuracy"].max(), "train_loss_last": m["train_loss"].iloc[-1]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/results/scale/splitfed_tails"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    jobs = [(mode, seed) for seed in args.seeds for mode in MODES]
    while jobs:
        batch, jobs = jobs[:args.jobs], jobs[args.jobs:]
        procs = [run_one(args.out, mode, seed, args.data_dir) for mode, seed in batch]
        if any(p.wait() != 0 for p in procs):
            raise SystemExit("a run failed")
    frame = table(args.out, args.seeds)
    summary = frame.groupby("splitfed_tails")[["final_test_accuracy", "best_test_accuracy"]].agg(["mean", "std"])
    text = (f"config: {BASE}\n\n" + frame.to_markdown(index=False, floatfmt=".4f") + "\n\n"
            + summary.to_markdown(floatfmt=".4f") + "\n")
    (args.out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
