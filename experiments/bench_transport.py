#!/usr/bin/env python
"""Benchmark: the same training on the local runner and on `flwr run` with each transport.

    python experiments/bench_transport.py [--rounds 2] [--clients 5] [--batch-size 128]
        [--scheme vanilla] [--codec acp] [--threads N] [--federation-config '...']
        [--dataset fashion-mnist --data-dir data --train-subset 10000 --test-subset 500]

Runs one seeded config (default: synthetic 3x32x32 data, 2000 training / 500 test samples,
i.e. 3-4 batches per client and round: short rounds, where the fixed cost of one Flower
message per client and round weighs most; a real dataset gives realistic rounds) with
`acp-flower run` (the in-process local runner; once before and once after the others, as
the machine may be shared), and through `acp-flower simulate` (`flwr run .`) with `transport=ray`
(tail in a Ray actor, one Flower message per client and round) and `transport=flower`
(one Flower message per mini-batch). Per-round wall time is each driver's own `wall_s` of
metrics.csv (train + evaluate, the same measure everywhere); a driver's time per round is
the median over its rounds after the first (round 1 also pays first-call warm-ups: kernel
selection, lazy imports; with --rounds 1 it is all there is). Start-up (SuperLink, Ray, client actors, data: everything
outside the rounds) is reported separately. The bytes of every round must agree across
the drivers, or the script fails. Target: ray/local <= 1.15.
Last line: `ratios: ray/local=<x> flower/local=<y>`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from acp_flower.apps.launch import simulate  # noqa: E402
from acp_flower.config import ExperimentConfig  # noqa: E402

BYTES = ["bytes_up", "bytes_down"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--scheme", default="vanilla", help="vanilla, splitfed_v1 or splitfed_v2")
    p.add_argument("--codec", default="acp")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default="synthetic",
                   help="synthetic (default, no files) or a real dataset such as fashion-mnist (longer rounds)")
    p.add_argument("--data-dir", default="data", help="where a real dataset lies (fetched if missing)")
    p.add_argument("--train-subset", type=int, default=0, help="0 = all (2000 synthetic samples)")
    p.add_argument("--test-subset", type=int, default=500, help="evaluation samples per round (0 = all)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per process (OMP_NUM_THREADS of every process); 0 = torch's default")
    p.add_argument("--federation-config", default="client-resources-num-cpus=2",
                   help="passed to flwr run (num-supernodes is set to --clients)")
    return p.parse_args(argv)


def bench_config(args: argparse.Namespace) -> ExperimentConfig:
    return ExperimentConfig(
        dataset=args.dataset, data_dir="" if args.dataset == "synthetic" else str(Path(args.data_dir).resolve()),
        train_subset=args.train_subset, test_subset=args.test_subset, rounds=args.rounds, num_clients=args.clients,
        batch_size=args.batch_size, eval_batch_size=500, scheme=args.scheme, codec=args.codec, optimizer="adam",
        lr=1e-3, seed=args.seed, device="cpu",
    )


def run_local(cfg: ExperimentConfig, out: Path) -> tuple[pd.DataFrame, float]:
    """`acp-flower run` in a process of its own, in a new session like the SuperLink's (the
    kernel's autogroup scheduler shares the CPU between sessions on a busy machine)."""
    out.mkdir(parents=True)
    (out / "config.in.toml").write_text(cfg.to_toml())
    command = [sys.executable, "-m", "acp_flower.cli", "run", "--config", str(out / "config.in.toml"),
               "--out", str(out / "run"), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, start_new_session=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"acp-flower run failed: {proc.stderr[-2000:]}")
    return pd.read_csv(out / "run" / "metrics.csv"), time.perf_counter() - t0


def run_flwr(cfg: ExperimentConfig, transport: str, federation: str, out_root: Path) -> tuple[pd.DataFrame, float]:
    out = out_root / transport
    run_config = " ".join(f"{k}={_toml(v)}" for k, v in cfg.replace(transport=transport, out_dir=str(out))
                          .to_run_config().items())
    outcome = simulate([run_config], [federation], stream=False)
    if not outcome.ok:
        raise RuntimeError(f"flwr run with transport={transport} ended {outcome.status}: {outcome.details}")
    return pd.read_csv(out / "metrics.csv"), outcome.wall_s


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else repr(value)


def report(results: dict[str, list[tuple[pd.DataFrame, float]]]) -> dict[str, float]:
    """Print per-round and start-up times; return each driver's median time per round."""
    local_bytes = results["local"][0][0][BYTES].reset_index(drop=True)
    medians = {}
    print(f"{'driver':8} {'rounds wall_s (per run)':34} {'median/round':>12} {'start-up':>9} {'total':>8}")
    print(f"{'':8} {'(s; median of rounds >= 2)':34}")
    for name, runs in results.items():
        for frame, _ in runs:
            if not frame[BYTES].reset_index(drop=True).equals(local_bytes):
                raise RuntimeError(f"{name}: bytes per round differ from the local runner:\n{frame[BYTES]}\n{local_bytes}")
        rounds = [r for frame, _ in runs for r in frame["wall_s"].iloc[1:]] or [r for f, _ in runs for r in f["wall_s"]]
        medians[name] = statistics.median(rounds)
        startup = statistics.mean(total - frame["wall_s"].sum() for frame, total in runs)
        total = statistics.mean(total for _, total in runs)
        shown = " | ".join(" ".join(f"{r:.2f}" for r in frame["wall_s"]) for frame, _ in runs)
        print(f"{name:8} {shown:34} {medians[name]:12.2f} {startup:9.1f} {total:8.1f}")
    acc = {name: f"{runs[0][0]['test_accuracy'].iloc[-1]:.4f}" for name, runs in results.items()}
    print(f"bytes per round identical on all drivers: {local_bytes.to_dict('records')}; final accuracy {acc}")
    return medians


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by every process below
    cfg = bench_config(args)
    federation = f"num-supernodes={args.clients} {args.federation_config}"
    print(f"config: {args.dataset} (train subset {args.train_subset or 'all'}), {args.clients} clients, "
          f"{args.rounds} rounds, batch {args.batch_size}, {args.scheme}, {args.codec}; federation: {federation}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-transport-") as tmp:
        results = {"local": [run_local(cfg, Path(tmp) / "local1")]}
        for transport in ("ray", "flower"):
            print(f"running flwr run (transport={transport}) ...", flush=True)
            results[transport] = [run_flwr(cfg, transport, federation, Path(tmp))]
        results["local"].append(run_local(cfg, Path(tmp) / "local2"))
    means = report(results)
    print(f"ratios: ray/local={means['ray'] / means['local']:.3f} flower/local={means['flower'] / means['local']:.3f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, ValueError) as exc:
        print(f"bench_transport: error: {exc}", file=sys.stderr)
        sys.exit(1)
