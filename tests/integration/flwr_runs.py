"""Real ``flwr run .`` simulations for the integration tests, run two at a time.

Each run goes through the user-facing command, ``python -m acp_flower.cli simulate``,
with its own FLWR_HOME and SuperLink (free ports), on synthetic data: 3 SuperNodes,
2 rounds, 64 samples (2 mini-batches) per client. Start-up (SuperLink, Ray, actors that
import torch) dominates, so the runs that the selected tests need are all started on first
use, two at a time, and each test waits for its own (``bench``: the smoke run of
experiments/bench_transport.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import tomli_w

from acp_flower.config import ExperimentConfig

REPO = Path(__file__).resolve().parents[2]
BASE = dict(dataset="synthetic", data_dir="", train_subset=192, test_subset=64, num_clients=3, rounds=2,
            batch_size=32, eval_batch_size=64, optimizer="adam", lr=1e-3, codec="acp")
RUNS: dict[str, tuple[dict, str]] = {
    # name: (config changes, --federation-config)
    # fresh tails in groups of 2 (clients 0, 1 then 2): the tail actor frees copies mid-round
    "ray_v1": (dict(scheme="splitfed_v1", splitfed_group_size=2), "client-resources-num-cpus=1"),
    "ray_v2_turns": (dict(scheme="splitfed_v2", partition="dirichlet", dirichlet_alpha=1.0),
                     "client-resources-num-cpus=1 init-args-num-cpus=3"),
    "flower_v2": (dict(scheme="splitfed_v2", transport="flower", partition="dirichlet", dirichlet_alpha=1.0),
                  "client-resources-num-cpus=1"),
    # 3 clients > 2 client actors: SplitFed-v2 on the ray transport falls back to per-batch
    # messages with the tail in the actor
    "ray_skip": (dict(scheme="splitfed_v2", fail_client=1, fail_round=1, on_client_error="skip"),
                 "client-resources-num-cpus=1"),
    # fault injection: a NaN upload refused by the tail actor (the client sees the error
    # through Ray), and a client that hangs past the reply timeout
    "ray_nan_skip": (dict(scheme="vanilla", fail_client=1, fail_round=1, fail_kind="nan", on_client_error="skip"),
                     "client-resources-num-cpus=1"),
    "flower_hang_skip": (dict(scheme="vanilla", transport="flower", fail_client=0, fail_round=1, fail_kind="hang",
                              reply_timeout_s=15.0, on_client_error="skip"), "client-resources-num-cpus=1"),
    # checkpoint/resume: killed (SIGKILL, every process) during round 2, then resumed;
    # 10 mini-batches per client so that a round lasts long enough to be interrupted
    "resume_ray": (dict(scheme="splitfed_v1", rounds=3, train_subset=960), "client-resources-num-cpus=1"),
    "resume_flower": (dict(scheme="splitfed_v2", transport="flower", rounds=3, train_subset=960),
                      "client-resources-num-cpus=1"),
    "flower_stop": (dict(scheme="vanilla", transport="flower", fail_client=2, fail_round=1, rounds=1),
                    "client-resources-num-cpus=1"),
    # decoupled SL (nothing sent back) and the lightweight-FedSL options, one run per transport
    "ray_decoupled": (dict(scheme="vanilla", exchange="decoupled", aux_head="linear", act_dropout=0.3),
                      "client-resources-num-cpus=1"),
    "flower_fedsl": (dict(scheme="splitfed_v1", transport="flower", codec="standard", act_dropout=0.5,
                          down_quantize_bits=8, head_prune_sparsity=0.5, link_heterogeneity=0.5),
                     "client-resources-num-cpus=1"),
    # the small ViT with ADC (merged batches, soft labels, token selection), one run per transport
    "ray_vit_adc": (dict(scheme="splitfed_v1", model="vit_tiny", vit_depth=2, vit_embed_dim=32, vit_heads=2,
                         vit_patch_size=8, cut_layer=1, codec="adc", adc_batch_ratio=0.5, adc_tokens=5),
                    "client-resources-num-cpus=1"),
    "flower_vit_adc": (dict(scheme="vanilla", transport="flower", model="vit_tiny", vit_depth=2, vit_embed_dim=32,
                            vit_heads=2, vit_patch_size=8, cut_layer=1, codec="adc", adc_batch_ratio=0.25,
                            adc_tokens=3), "client-resources-num-cpus=1"),
    # client sampling: 2 of 4 SuperNodes per round (vanilla: a seeded order), one run per transport
    "ray_sampled": (dict(scheme="vanilla", num_clients=4, train_subset=256, clients_per_round=2,
                         partition="dirichlet", dirichlet_alpha=1.0),
                    "client-resources-num-cpus=1"),
    "flower_sampled_v1": (dict(scheme="splitfed_v1", transport="flower", num_clients=4, train_subset=256,
                               clients_per_round=0.5, partition="dirichlet", dirichlet_alpha=1.0,
                               splitfed_group_size=1),
                          "client-resources-num-cpus=1"),
}
RUN_TIMEOUT_S = 600
BENCH_SMOKE = ["--rounds", "1", "--clients", "2", "--train-subset", "128", "--batch-size", "32", "--threads", "1"]


@dataclass
class FlwrRun:
    """What one ``acp-flower simulate`` call left behind."""

    cfg: ExperimentConfig
    returncode: int
    output: str
    out_dir: Path
    flwr_home: Path

    @property
    def metrics(self) -> pd.DataFrame:
        return pd.read_csv(self.out_dir / "metrics.csv")

    @property
    def summary(self) -> dict:
        return json.loads((self.out_dir / "summary.json").read_text())


def config_of(name: str, root: Path) -> ExperimentConfig:
    changes, _ = RUNS[name]
    return ExperimentConfig.from_dict({**BASE, **changes, "out_dir": str(root / name / "out")})


def _simulate_command(name: str, root: Path) -> tuple[ExperimentConfig, list[str]]:
    cfg = config_of(name, root)
    work = root / name
    work.mkdir(parents=True, exist_ok=True)
    overrides = {k.replace("_", "-"): v for k, v in {**BASE, **RUNS[name][0]}.items()}
    overrides["out-dir"] = cfg.out_dir
    (work / "run.toml").write_text(tomli_w.dumps(overrides))
    command = [sys.executable, "-m", "acp_flower.cli", "simulate", "--quiet", "--run-config", str(work / "run.toml"),
               "--federation-config", RUNS[name][1], "--flwr-home", str(work / "flwr-home"),
               "--timeout", str(RUN_TIMEOUT_S - 120)]  # simulate cleans up itself before we kill it
    return cfg, command


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_simulate(name: str, root: Path, *extra: str) -> FlwrRun:
    """``python -m acp_flower.cli simulate`` for run ``name`` (one torch thread per process)."""
    cfg, command = _simulate_command(name, root)
    proc = subprocess.run(command + list(extra), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, check=False)
    return FlwrRun(cfg, proc.returncode, proc.stdout + proc.stderr, Path(cfg.out_dir), root / name / "flwr-home")


@dataclass
class ResumedRun:
    """A run killed during a round (every process, SIGKILL), then resumed to its end."""

    run: FlwrRun
    """The resumed run (its metrics.csv is the whole run's)."""
    checkpoint_round: int
    """The last finished round in checkpoint.pt when the run was killed."""
    rows_at_kill: int
    """Rows metrics.csv held when the run was killed."""
    killed: int
    """Processes killed (launcher, SuperLink, SuperExec, simulation, Ray)."""
    left_after_kill: list[int]


KILL_DELAY_S = 1.0
"""How long into the next round the run is killed (a round of these runs lasts several seconds)."""


def run_killed_and_resumed(name: str, root: Path) -> ResumedRun:
    """Start run ``name`` with --checkpoint, SIGKILL every process of it once round 1 is
    checkpointed (KILL_DELAY_S into round 2), then run it again with --resume."""
    import torch

    cfg, command = _simulate_command(name, root)
    home, out = root / name / "flwr-home", Path(cfg.out_dir)
    first = subprocess.Popen(command + ["--checkpoint"], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (out / "checkpoint.pt").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(KILL_DELAY_S)
    victims = processes_mentioning(str(home))  # the launcher too: its command line names FLWR_HOME
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    first.wait(timeout=30)
    for _ in range(100):  # the kernel reaps the rest (Ray's processes) shortly
        if not (left := processes_mentioning(str(home))):
            break
        time.sleep(0.1)
    rows = len(pd.read_csv(out / "metrics.csv")) if (out / "metrics.csv").exists() else 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True) if (out / "checkpoint.pt").exists() else {}
    resumed = run_simulate(name, root, "--resume")
    return ResumedRun(resumed, int(ckpt.get("server_round", 0)), rows, len(victims), left)


def run_bench_smoke(root: Path) -> subprocess.CompletedProcess:
    """experiments/bench_transport.py with --rounds 1 --clients 2 (two flwr runs, two local)."""
    command = [sys.executable, str(REPO / "experiments" / "bench_transport.py"), *BENCH_SMOKE]
    return subprocess.run(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=2 * RUN_TIMEOUT_S, check=False)


class RunPool:
    """Starts the requested runs (two at a time) once, and hands out their results."""

    def __init__(self, root: Path, names: list[str], workers: int = 2) -> None:
        self.root, self.lock = root, threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.futures: dict[str, Future] = {}
        for name in sorted(names, key=lambda n: n != "bench"):  # the longest job first
            self._submit(name)

    def _submit(self, name: str) -> Future:
        with self.lock:
            if name not in self.futures:
                if name == "bench":
                    job = (run_bench_smoke, self.root)
                elif name.startswith("resume_"):
                    job = (run_killed_and_resumed, name, self.root)
                else:
                    job = (run_simulate, name, self.root)
                self.futures[name] = self.pool.submit(*job)
            return self.futures[name]

    def get(self, name: str):
        return self._submit(name).result(timeout=4 * RUN_TIMEOUT_S)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line or environment contains ``text`` (e.g. a run's FLWR_HOME,
    which the SuperLink, SuperExec, simulation and Ray processes all inherit)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                if text in (proc / part).read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(proc.name))
                    break
            except OSError:
                continue
    return pids
