"""Benchmark: memory and time as the number of registered clients grows (issue 15).

In one run, each in a fresh process whose whole process tree is sampled for RSS:
  (a) the local runner with 100, 1,000 and 10,000 registered clients, 100 sampled per
      round: peak RSS and wall time per round;
  (b) ``acp-flower simulate`` (flwr run, Ray simulation engine) with 1,000 and 10,000
      SuperNodes, 100 sampled per round: the same figures;
  (c) one SplitFed-v1 round of 100 clients, batched (``batch_clients``, groups of
      ``splitfed_group_size``) and one by one, against one centralized epoch of the same
      model over the same samples (same batch size, optimizer, device and thread count),
      centralized measured before and after the rounds (the mean is the baseline).
Tiny config for (a)/(b): synthetic data with --per-client samples per registered client
(so every round trains the same number of samples whatever the registration count),
SplitFed-v1 with fresh tails, codec acp, Adam. Not a test: the figures depend on the machine.
Last line: ``ratios: splitfed100/centralized=<x> rss10k_gib=<y>`` (y: the local runner's
10,000-client peak; targets x <= 1.3, y <= 8).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import tomli_w

REPO = Path(__file__).resolve().parents[1]
GIB = 1024 ** 3


def tiny(num_clients: int, args) -> dict:
    return dict(dataset="synthetic", data_dir="", num_clients=num_clients,
                synthetic_train_size=num_clients * args.per_client, clients_per_round=min(args.sampled, num_clients),
                rounds=args.rounds, batch_size=args.batch_size,
                test_subset=100, eval_batch_size=100, scheme="splitfed_v1", codec="acp", optimizer="adam", lr=1e-3,
                seed=0, device=args.device)


class TreeRSS:
    """Peaks of the summed RSS and PSS of a process and all its descendants, sampled in a thread.

    RSS counts a page shared by several processes (torch's libraries in every Ray worker)
    once per process; PSS splits it between them, so its sum is what the tree really uses.
    """

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        self.root, self.every_s, self._stop = psutil.Process(pid), every_s, threading.Event()
        self.peak = self.peak_pss = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = pss = 0
            for p in procs:
                try:
                    info = p.memory_full_info()
                    rss, pss = rss + info.rss, pss + info.pss
                except psutil.Error:
                    pass
            self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, pss)
            self._stop.wait(self.every_s)

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self.thread.join()
        return self.peak, self.peak_pss


def measured(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[tuple[int, int], float, str]:
    """Run ``cmd``; ((peak tree RSS, PSS) in bytes, wall seconds, output tail). Fails loudly."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rss = TreeRSS(proc.pid)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        raise SystemExit(f"timed out after {timeout:.0f}s: {' '.join(cmd[:4])} ...") from None
    peak = rss.stop()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return peak, time.perf_counter() - t0, out[-2000:]


LOCAL = """
import json, sys
from acp_flower.config import ExperimentConfig
from acp_flower.runners.local import run_experiment
frame = run_experiment(ExperimentConfig.from_dict(json.loads(sys.argv[1])), None, progress=False)
print("ROUNDS", json.dumps(frame[["round", "wall_s", "clients", "test_accuracy"]].to_dict("records")))
"""


def local_scale(n: int, args, env) -> dict:
    peak, wall, out = measured([sys.executable, "-c", LOCAL, json.dumps(tiny(n, args))], env, args.timeout)
    rounds = json.loads(out.split("ROUNDS", 1)[1].strip().splitlines()[0])
    return {"driver": "local", "clients": n, "peak_rss_gib": peak[0] / GIB, "peak_pss_gib": peak[1] / GIB,
            "total_s": wall,
            "round_s": sum(r["wall_s"] for r in rounds) / len(rounds), "trained_per_round": rounds[-1]["clients"]}


def flwr_scale(n: int, args, env) -> dict:
    from acp_flower.config import ExperimentConfig

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        run_toml = Path(tmp) / "run.toml"  # the config's own run-config form, as a file simulate reads
        run_toml.write_text(tomli_w.dumps(ExperimentConfig.from_dict({**tiny(n, args), "out_dir": tmp}).to_run_config()))
        cmd = [sys.executable, "-m", "acp_flower.cli", "simulate", "--quiet", "--run-config", str(run_toml),
               "--federation-config", f"num-supernodes={n} client-resources-num-cpus={args.client_cpus}"]
        peak, wall, _ = measured(cmd, env, args.timeout)
        frame = pd.read_csv(Path(tmp) / "metrics.csv")
    return {"driver": "flwr", "clients": n, "peak_rss_gib": peak[0] / GIB, "peak_pss_gib": peak[1] / GIB,
            "total_s": wall,
            "round_s": float(frame["wall_s"].mean()), "trained_per_round": int(frame["clients"].iloc[-1])}


def splitfed_vs_centralized(args) -> dict:
    """(c) in this process: centralized epoch, SplitFed-v1 round, centralized epoch."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Subset

    from acp_flower.config import ExperimentConfig
    from acp_flower.data import prepare_data
    from acp_flower.runners.local import LocalExecutor
    from acp_flower.runtime import build_client, initial_states, make_optimizer, resolve_device
    from acp_flower.runtime.common import build_split
    from strategies import build_strategy

    torch.set_num_threads(args.threads)
    n = args.ratio_clients
    cfg = ExperimentConfig.from_dict(dict(
        dataset="synthetic", data_dir="", num_clients=n, synthetic_train_size=n * args.ratio_samples, rounds=1,
        batch_size=args.ratio_batch_size, scheme="splitfed_v1", codec="standard", optimizer="adam", lr=1e-3,
        seed=0, device=args.device))
    data, device = prepare_data(cfg), resolve_device(cfg.device)
    everything = Subset(data.train_set, [int(i) for p in data.partitions for i in p])

    def centralized_epoch() -> float:
        split = build_split(cfg)
        model = torch.nn.Sequential(split.head, split.tail).to(device)
        opt = make_optimizer(cfg, model.parameters())
        loader = DataLoader(everything, batch_size=cfg.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def splitfed_round(batched: bool) -> float:
        run_cfg = cfg.replace(batch_clients=batched)
        clients = {cid: build_client(run_cfg, cid, data.train_set, p, device) for cid, p in enumerate(data.partitions)}
        executor = LocalExecutor(run_cfg, clients, device)
        strategy = build_strategy(run_cfg)
        strategy.initialize(executor, *initial_states(cfg))
        t0 = time.perf_counter()
        strategy.train_round(1, executor)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    before = centralized_epoch()
    batched = splitfed_round(batched=True)
    one_by_one = splitfed_round(batched=False)
    after = centralized_epoch()
    central = (before + after) / 2
    return {"clients": n, "samples": len(everything), "batch_size": cfg.batch_size, "threads": args.threads,
            "group_size": cfg.splitfed_group_size, "device": str(device),
            "centralized_s": [round(before, 2), round(after, 2)], "splitfed_batched_round_s": batched,
            "splitfed_one_by_one_round_s": one_by_one, "ratio": batched / central,
            "ratio_one_by_one": one_by_one / central}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[100, 1000, 10000], help="local runner")
    parser.add_argument("--flwr-clients", type=int, nargs="*", default=[1000, 10000], help="acp-flower simulate")
    parser.add_argument("--sampled", type=int, default=100, help="clients per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-client", type=int, default=8, help="synthetic samples per registered client")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--client-cpus", type=int, default=1, help="client-resources-num-cpus of the flwr runs")
    parser.add_argument("--ratio-clients", type=int, default=100)
    parser.add_argument("--ratio-samples", type=int, default=128, help="samples per client in (c)")
    parser.add_argument("--ratio-batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch_threads_default(), help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=3600.0, help="per measured process, seconds")
    parser.add_argument("--out", type=Path, help="also write the table and ratios here (a .json file)")
    args = parser.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    rows = []
    for n in args.clients:
        rows.append(local_scale(n, args, env))
        print(json.dumps(rows[-1]), flush=True)
    for n in args.flwr_clients:
        rows.append(flwr_scale(n, args, env))
        print(json.dumps(rows[-1]), flush=True)
    ratio = splitfed_vs_centralized(args)
    print(json.dumps(ratio), flush=True)
    table = pd.DataFrame(rows)
    if not table.empty:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    local10k = table[(table.driver == "local") & (table.clients == 10000)] if not table.empty else table
    rss10k = float(local10k["peak_rss_gib"].iloc[0]) if len(local10k) else float("nan")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "splitfed_vs_centralized": ratio,
                                        "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))
    print(f"one by one: splitfed{args.ratio_clients}/centralized={ratio['ratio_one_by_one']:.3f}")
    print(f"ratios: splitfed{args.ratio_clients}/centralized={ratio['ratio']:.3f} rss10k_gib={rss10k:.3f}")
    return 0


def torch_threads_default() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


if __name__ == "__main__":
    sys.exit(main())
