#!/usr/bin/env python
"""ADC against byte-matched RandTopk and Quantization on a small ViT (issue: ViT + ADC).

    python experiments/adc.py [--arms standard adc10 ...] [--rounds R] [--out DIR]
        [--jobs N] [--set key=value ...] [--no-run] [--pool DIR ...]

Setting (``BASE``): CIFAR-10, a seeded 5,000-image training subset (crop + flip) and 2,000
test images, 5 clients IID, vanilla SL, batch 64, Adam lr 1e-3, seed 0; the ViT of
``model = "vit_tiny"`` trained from scratch (no pretrained weights) in the CPU shape:
6 blocks, patch 8 (16 patch tokens + CLS), width 192, 3 heads, cut after block 3.

Arms (``ARMS``): Standard-SL; ADC at three compression ratios c (0.1, 0.25, 0.5 of
Standard-SL's up-link values), split between batch merging and token selection as the
authors' code does (batch ratio c^(1/5), token ratio c^(4/5), tokens rounded, CLS
included); Quantization-SL and RandTopk-SL matched to the same bytes (quantization:
32 c bits; RandTopk: value + 16-bit index per element, so k = c * 32 / 48).

Every arm is resumable (``--checkpoint`` semantics) and a finished one is skipped. Writes
``table.md`` / ``table.csv`` (final and best test accuracy, up-link MB per round, its
ratio to Standard-SL, rounds to the targets) and ``accuracy_vs_mb.png`` under ``--out``.
One seed per ``--out`` (``--set seed=1 --out DIR1``); ``--pool DIR ...`` then writes
``table_seeds.md`` / ``.csv`` under ``--out``: mean and std over the tables of ``--out`` and
the pooled directories, arm by arm.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from acp_flower.config import ExperimentConfig, parse_overrides  # noqa: E402

BASE = dict(seed=0, dataset="cifar10", num_clients=5, scheme="vanilla", partition="iid", batch_size=64,
            optimizer="adam", lr=0.001, train_subset=5000, test_subset=2000, augment=True, rounds=20,
            model="vit_tiny", vit_depth=6, vit_patch_size=8, cut_layer=3, target_accuracies=[0.35, 0.40])
TOKENS = 17
"""Tokens the CPU-shaped head produces (16 patches + CLS)."""
RATIOS = {"10": 0.1, "25": 0.25, "50": 0.5}


def _adc(c: float) -> dict:
    tokens = max(1, round(c ** 0.8 * TOKENS))
    return dict(codec="adc", adc_batch_ratio=round(c ** 0.2, 4), adc_tokens=tokens)


ARMS: dict[str, dict] = {"standard": dict(codec="standard")}
for _name, _c in RATIOS.items():
    ARMS[f"adc{_name}"] = _adc(_c)
    ARMS[f"quantize{_name}"] = dict(codec="quantize", quantize_bits=max(1, round(32 * _c)))
    ARMS[f"randtopk{_name}"] = dict(codec="randtopk", randtopk_k=round(_c * 32 / 48, 4))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "adc")
    p.add_argument("--data-dir", default=os.environ.get("ACP_DATA_DIR", "data"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--jobs", type=int, default=1, help="arms run at once, one torch thread each")
    p.add_argument("--no-run", action="store_true", help="only tabulate and plot the finished runs")
    p.add_argument("--pool", nargs="+", type=Path, default=[], metavar="DIR",
                   help="also pool these --out directories (other seeds) into table_seeds.md")
    return p.parse_args(argv)


def arm_config(arm: str, args: argparse.Namespace) -> ExperimentConfig:
    values = {**BASE, "data_dir": args.data_dir, **ARMS[arm], **parse_overrides(args.set)}
    if args.rounds:
        values["rounds"] = args.rounds
    return ExperimentConfig.from_dict(values)


def run_arms(arms: list[str], args: argparse.Namespace) -> None:
    """Each unfinished arm in its own process (``acp-flower run --resume``), ``--jobs`` at a time."""
    pending = [a for a in arms if not (args.out / "runs" / a / "summary.json").exists()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: list[subprocess.Popen] = []
    for arm in pending:
        out = args.out / "runs" / arm
        out.mkdir(parents=True, exist_ok=True)
        (out / "arm.toml").write_text(arm_config(arm, args).to_toml())
        cmd = [sys.executable, "-m", "acp_flower.cli", "run", "--config", str(out / "arm.toml"), "--out", str(out),
               "--resume", "--no-progress"]
        with (out / "log.txt").open("a") as log:
            running.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        while len(running) >= args.jobs:
            running[0].wait()
            running = [p for p in running if p.poll() is None]
    for proc in running:
        proc.wait()


def table(arms: list[str], args: argparse.Namespace) -> pd.DataFrame:
    rows, standard_mb = [], None
    for arm in arms:
        run = args.out / "runs" / arm
        if not (run / "summary.json").exists():
            continue
        m = pd.read_csv(run / "metrics.csv")
        summary = json.loads((run / "summary.json").read_text())
        mb = m["bytes_up"].mean() / 1e6
        if arm == "standard":
            standard_mb = mb
        row = {"arm": arm, **{k: v for k, v in ARMS[arm].items() if k != "codec"}, "codec": ARMS[arm]["codec"],
               "final_acc": m["test_accuracy"].iloc[-1], "best_acc": m["test_accuracy"].max(),
               "final_train_acc": m["train_accuracy"].iloc[-1], "mb_up_per_round": mb,
               "mb_down_per_round": m["bytes_down"].mean() / 1e6, "rounds": len(m)}
        for target, hit in (summary.get("targets") or {}).items():
            row[f"rounds_to_{target}"] = hit.get("round") if isinstance(hit, dict) else hit
        rows.append(row)
    frame = pd.DataFrame(rows)
    if standard_mb and not frame.empty:
        frame.insert(frame.columns.get_loc("mb_up_per_round") + 1, "up_ratio", frame["mb_up_per_round"] / standard_mb)
    return frame


def plot(arms: list[str], args: argparse.Namespace) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"standard": "k-", "adc": "C0-", "quantize": "C1--", "randtopk": "C2:"}
    for arm in arms:
        run = args.out / "runs" / arm / "metrics.csv"
        if not run.exists():
            continue
        m = pd.read_csv(run)
        codec = ARMS[arm]["codec"]
        ax.plot(m["bytes_up"].cumsum() / 1e6, 100 * m["test_accuracy"], styles[codec], label=arm,
                alpha=0.5 + 0.5 * (arm.endswith("10") or codec == "standard"))
    ax.set_xscale("log")
    ax.set_xlabel("cumulative up-link MB (all clients)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("CIFAR-10, ViT (6 blocks, patch 8) from scratch, 5 clients, vanilla SL")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = args.out / "accuracy_vs_mb.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pooled(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Mean and std (over seeds) of the accuracies of each arm, with its bytes (equal across seeds)."""
    frame = pd.concat([t.assign(seed_table=i) for i, t in enumerate(tables)])
    acc = frame.groupby("arm", sort=False)[["final_acc", "best_acc", "final_train_acc"]].agg(["mean", "std"])
    acc.columns = [f"{col}_{stat}" for col, stat in acc.columns]
    rest = frame.groupby("arm", sort=False).agg(codec=("codec", "first"), mb_up_per_round=("mb_up_per_round", "mean"),
                                                up_ratio=("up_ratio", "mean"), seeds=("seed_table", "nunique"))
    return rest.join(acc).reset_index()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_run:
        run_arms(args.arms, args)
    frame = table(args.arms, args)
    if frame.empty:
        print("no finished runs")
        return 1
    frame.to_csv(args.out / "table.csv", index=False)
    (args.out / "table.md").write_text(frame.to_markdown(index=False, floatfmt=".4g") + "\n")
    print(frame.to_markdown(index=False, floatfmt=".4g"))
    print(f"plot: {plot(args.arms, args)}")
    if args.pool:
        seeds = pooled([frame] + [pd.read_csv(d / "table.csv") for d in args.pool])
        seeds.to_csv(args.out / "table_seeds.csv", index=False)
        (args.out / "table_seeds.md").write_text(seeds.to_markdown(index=False, floatfmt=".4g") + "\n")
        print(seeds.to_markdown(index=False, floatfmt=".4g"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
