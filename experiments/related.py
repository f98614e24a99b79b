#!/usr/bin/env python
"""The related schemes next to ACP-SL: decoupled SL, lightweight FedSL, and the link model.

    python experiments/related.py [--datasets fashion-mnist cifar10] [--arms standard acp ...]
        [--rounds R] [--clients C] [--out DIR] [--set key=value ...] [--no-run] [--threads N]

Runs every arm (``ARMS``) on every dataset in the reduced setting of the paper
reproduction (setting R-B: 5 clients, vanilla SL, IID, batch 128, Adam lr 0.00015, a
seeded 4,000-sample training subset and 2,000 test images), resumable (``--checkpoint``
semantics: an interrupted run continues, a finished one is skipped), measures each arm's
peak step memory per side once, then writes per dataset: ``table_<dataset>.md/.csv``
(final/best accuracy, MB up/down per round, client peak memory, client FLOPs and
non-zero parameters, simulated time to the target accuracy at two link settings) and
``simtime_<dataset>.png`` (test accuracy against simulated time at both link settings).

The link settings re-price the recorded exact bytes of every round (``link.sequential_comm_s``,
vanilla SL: the clients' times add up) and add the measured compute of each round, which
is this CPU's, server and client together: say so when quoting the times.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from acp_flower.config import ExperimentConfig, parse_overrides  # noqa: E402
from acp_flower.data import prepare_data  # noqa: E402
from acp_flower.exchanges import get_exchange  # noqa: E402
from acp_flower.link import LinkOptions, sequential_comm_s  # noqa: E402
from acp_flower.runners.local import run_experiment  # noqa: E402
from acp_flower.runtime import resolve_device  # noqa: E402
from acp_flower.runtime.memory import measure_step_memory  # noqa: E402

BASE = dict(seed=0, num_clients=5, scheme="vanilla", partition="iid", batch_size=128, optimizer="adam",
            lr=0.00015, train_subset=4000, test_subset=2000, rounds=15)
"""Setting R-B of experiments/results/paper/REPORT.md (IID)."""
TARGETS = {"fashion-mnist": [0.80, 0.82], "cifar10": [0.35, 0.40], "synthetic": [0.2]}
"""Accuracies whose rounds and simulated time to reach the tables report (``--set target_accuracies=...``)."""
ARMS: dict[str, dict] = {
    "standard": dict(codec="standard"),
    "acp": dict(codec="acp"),
    "decoupled": dict(exchange="decoupled", codec="standard"),
    "decoupled_acp": dict(exchange="decoupled", codec="acp"),
    "dropout50": dict(codec="standard", act_dropout=0.5),
    "down8": dict(codec="standard", down_quantize_bits=8),
    "standard_cut6": dict(codec="standard", cut_layer=6),
    "prune50_cut6": dict(codec="standard", cut_layer=6, head_prune_sparsity=0.5, head_prune_start_round=1,
                         head_prune_end_round=5),
}
"""Arm name -> config changes. cut 6 = the head ends after layer2 (where pruning has weights to prune)."""
MEMORY_ARMS: dict[str, dict] = {
    f"{name}_cut{cut}": {**changes, "cut_layer": cut, "codec": "standard"}
    for cut in (4, 6)
    for name, changes in (("backprop", {}), ("decoupled_conv_mlp", {"exchange": "decoupled"}),
                          ("decoupled_linear", {"exchange": "decoupled", "aux_head": "linear"}))
}
"""Peak step memory only (no training): backprop vs decoupled at the default and a deeper cut."""
LINKS = {"10 Mbit/s": LinkOptions(link_up_mbps=10.0, link_down_mbps=10.0, link_latency_ms=10.0),
         "100 Mbit/s": LinkOptions(link_up_mbps=100.0, link_down_mbps=100.0, link_latency_ms=10.0)}
"""The two link settings (symmetric rates, 10 ms one-way latency)."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["fashion-mnist", "cifar10"])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--rounds", type=int, help=f"rounds per run (default {BASE['rounds']})")
    p.add_argument("--clients", type=int, help=f"clients (default {BASE['num_clients']})")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "related")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run (repeatable)")
    p.add_argument("--no-run", action="store_true", help="only tabulate and plot the finished runs")
    p.add_argument("--threads", type=int, help="torch threads (one per process when two runs share a machine)")
    p.add_argument("--memory", action="store_true",
                   help="also measure MEMORY_ARMS' peak step memory per side (memory_<dataset>.md)")
    return p.parse_args(argv)


def arm_config(dataset: str, arm: str, args: argparse.Namespace) -> ExperimentConfig:
    """The config of ``arm`` on ``dataset``: ``BASE``, the arm's changes, then the command line's."""
    values = {**BASE, "dataset": dataset, "target_accuracies": TARGETS.get(dataset, [0.5]), **ARMS[arm]}
    if args.rounds:
        values["rounds"] = args.rounds
    if args.clients:
        values["num_clients"] = args.clients
    return ExperimentConfig.from_dict({**values, **parse_overrides(args.sets)})


def run_arm(cfg: ExperimentConfig, out: Path) -> None:
    """Run (or resume, or skip when finished) one arm; measure its step memory once."""
    if not (out / "summary.json").exists():
        run_experiment(cfg, out, progress=True, resume=True)
    memory = out / "memory.json"
    if not memory.exists():
        peak = measure_step_memory(cfg, prepare_data(cfg), resolve_device(cfg.device))
        memory.write_text(json.dumps(peak, indent=2) + "\n")


def priced(metrics: pd.DataFrame, cfg: ExperimentConfig, link: LinkOptions) -> pd.Series:
    """Cumulative simulated time per round under ``link``: re-priced communication + measured compute."""
    blocking = get_exchange(cfg.exchange).blocking
    comm = metrics.apply(lambda r: sequential_comm_s(
        link, exchanges=int(r["exchanges"]), clients=int(r["clients"]), bytes_up=int(r["bytes_up"]),
        bytes_down=int(r["bytes_down"]), blocking=blocking), axis=1)
    compute = metrics["sim_wall_s"] - metrics["comm_s"]
    return (comm + compute).cumsum()


def time_to(metrics: pd.DataFrame, clock: pd.Series, target: float) -> float:
    hit = metrics.index[metrics["test_accuracy"] >= target]
    return float(clock.loc[hit[0]]) if len(hit) else float("nan")


def table(dataset: str, arms: list[str], args: argparse.Namespace) -> pd.DataFrame:
    rows = []
    for arm in arms:
        cfg, out = arm_config(dataset, arm, args), args.out / "runs" / dataset / arm
        if not (out / "summary.json").exists():
            continue
        m = pd.read_csv(out / "metrics.csv")
        mem = json.loads((out / "memory.json").read_text()) if (out / "memory.json").exists() else {}
        row = {
            "arm": arm, "rounds": len(m), "final_acc": m["test_accuracy"].iloc[-1],
            "best_acc": m["test_accuracy"].max(), "aux_final_acc": m["aux_test_accuracy"].iloc[-1],
            "MB_up/round": m["bytes_up"].mean() / 1e6, "MB_down/round": m["bytes_down"].mean() / 1e6,
            "client_peak_MB": mem.get("client_peak_bytes", float("nan")) / 1e6,
            "server_peak_MB": mem.get("server_peak_bytes", float("nan")) / 1e6,
            "client_MFLOPs/sample": m["client_flops"].iloc[-1] / 1e6,
            "client_sparse_MFLOPs": m["client_flops_sparse"].iloc[-1] / 1e6,
            "client_nonzero_params": int(m["client_params_nonzero"].iloc[-1]),
        }
        for target in cfg.target_accuracies:
            row[f"round_to_{target:g}"] = next((int(r) for r, a in zip(m["round"], m["test_accuracy"]) if a >= target),
                                               None)
            for name, link in LINKS.items():
                row[f"s_to_{target:g}@{name}"] = time_to(m, priced(m, cfg, link), target)
        rows.append(row)
    return pd.DataFrame(rows)


def plot(dataset: str, arms: list[str], args: argparse.Namespace) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LINKS), figsize=(6 * len(LINKS), 4), sharey=True)
    drawn = False
    for ax, (name, link) in zip(axes, LINKS.items()):
        for arm in arms:
            out = args.out / "runs" / dataset / arm
            if not (out / "summary.json").exists():
                continue
            m = pd.read_csv(out / "metrics.csv")
            ax.plot(priced(m, arm_config(dataset, arm, args), link) / 60, m["test_accuracy"], marker=".", label=arm)
            drawn = True
        ax.set(title=f"{dataset}, {name} links", xlabel="simulated time (min): communication + this CPU's compute",
               ylabel="test accuracy")
        ax.grid(alpha=0.3)
    if not drawn:
        plt.close(fig)
        return None
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = args.out / f"simtime_{dataset}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def memory_table(dataset: str, args: argparse.Namespace) -> pd.DataFrame:
    """Peak step memory per side of ``MEMORY_ARMS`` (batch and data as the training arms)."""
    rows = []
    for name, changes in MEMORY_ARMS.items():
        cfg = arm_config(dataset, "standard", args).replace(**changes)
        peak = measure_step_memory(cfg, prepare_data(cfg), resolve_device(cfg.device))
        rows.append({"arm": name, "client_peak_MB": peak["client_peak_bytes"] / 1e6,
                     "client_held_MB": peak["client_held_bytes"] / 1e6,
                     "server_peak_MB": peak["server_peak_bytes"] / 1e6,
                     "server_held_MB": peak["server_held_bytes"] / 1e6, "method": peak["method"]})
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets:
        if not args.no_run:
            for arm in args.arms:
                print(f"== {dataset} / {arm}", flush=True)
                run_arm(arm_config(dataset, arm, args), args.out / "runs" / dataset / arm)
        if args.memory:
            memory = memory_table(dataset, args)
            (args.out / f"memory_{dataset}.md").write_text(memory.to_markdown(index=False, floatfmt=".4g") + "\n")
            print(f"\n{dataset} peak step memory\n{memory.to_markdown(index=False, floatfmt='.4g')}")
        frame = table(dataset, args.arms, args)
        if frame.empty:
            print(f"{dataset}: no finished run")
            continue
        frame.to_csv(args.out / f"table_{dataset}.csv", index=False)
        (args.out / f"table_{dataset}.md").write_text(frame.to_markdown(index=False, floatfmt=".4g") + "\n")
        print(f"\n{dataset}\n{frame.to_markdown(index=False, floatfmt='.4g')}")
        plot(dataset, args.arms, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
