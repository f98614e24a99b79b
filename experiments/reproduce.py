#!/usr/bin/env python
"""Reproduce a figure of the ACP-SL paper: run its configs (resumable), then tabulate and plot.

    python experiments/reproduce.py --figure 4 [--rounds R] [--seeds S] [--device D]
        [--out DIR] [--clients C] [--set key=value ...] [--only GLOB] [--no-run] [--partial] [--dry-run]

Runs land in ``DIR/runs/<config stem>/seed<s>/`` (metrics.csv, summary.json, config.toml)
and are shared between figures; a run with a summary.json is skipped; an interrupted one
resumes from its last round's checkpoint.pt (or restarts if it has none). Tables and plots
land in ``DIR/fig<id>/``. See docs/reproduce.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from acp_flower import report  # noqa: E402
from acp_flower.config import ExperimentConfig  # noqa: E402

MANIFEST = ROOT / "experiments" / "paper" / "manifest.toml"
CONFIG_DIR = ROOT / "experiments" / "configs" / "paper"
DEFAULT_OUT = ROOT / "experiments" / "results" / "paper"

Runner = Callable[[ExperimentConfig, Path], Any]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--figure", required=True, help="figure id of the manifest (3, 4, 5, 6, eq10) or all")
    p.add_argument("--rounds", type=int, help="override every config's rounds (paper: 100)")
    p.add_argument("--seeds", default="1", help="number of seeds (3 -> 0,1,2) or a list (0,2,5)")
    p.add_argument("--device", help="override device: auto, cpu, cuda, cuda:N")
    p.add_argument("--clients", type=int, help="override num_clients (paper: 5)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output root (default {DEFAULT_OUT})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every run (repeatable), e.g. --set optimizer=adam")
    p.add_argument("--manifest", type=Path, default=MANIFEST, help="figure manifest (TOML)")
    p.add_argument("--configs", type=Path, default=CONFIG_DIR, help="directory of the curve configs")
    p.add_argument("--only", action="append", default=[], metavar="GLOB",
                   help="run only the configs whose stem matches this glob (repeatable), e.g. "
                        "'fig4_fmnist_*'; tables still show every curve of the figure")
    p.add_argument("--no-run", action="store_true", help="only aggregate the runs already finished")
    p.add_argument("--partial", action="store_true",
                   help="tables and plots also show unfinished runs (their rounds so far, marked partial)")
    p.add_argument("--dry-run", action="store_true", help="print the runs and their state, run nothing")
    return p.parse_args(argv)


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> [0, 1, 2]; ``"0,2,5"`` -> [0, 2, 5]."""
    if "," in text:
        return [int(s) for s in text.split(",") if s.strip()]
    count = int(text)
    if count < 1:
        raise ValueError(f"--seeds must be >= 1, got {count}")
    return list(range(count))


def resolve_config(path: Path, args: argparse.Namespace, seed: int) -> ExperimentConfig:
    """Load a curve's config; apply ``--set``, then --rounds/--clients/--device and the seed."""
    cfg = ExperimentConfig.from_toml(path, overrides=args.sets)
    changes: dict[str, Any] = {"seed": seed}
    for key, value in (("rounds", args.rounds), ("num_clients", args.clients), ("device", args.device)):
        if value is not None:
            changes[key] = value
    return cfg.replace(**changes)


def plan_runs(figures: Sequence[report.Figure], args: argparse.Namespace,
              seeds: Sequence[int]) -> list[tuple[ExperimentConfig, Path]]:
    """Every (config, run directory) the figures need, each run directory once."""
    runs: dict[Path, ExperimentConfig] = {}
    for figure in figures:
        for panel in figure.panels:
            for curve in panel.curves:
                if args.only and not any(fnmatch.fnmatchcase(Path(curve.config).stem, g) for g in args.only):
                    continue
                for seed in seeds:
                    run_dir = report.run_dir_for(args.out / "runs", curve, seed)
                    if run_dir not in runs:
                        runs[run_dir] = resolve_config(args.configs / curve.config, args, seed)
    return [(cfg, d) for d, cfg in runs.items()]


def local_runner(cfg: ExperimentConfig, out_dir: Path) -> Any:
    """Run one config with the in-process driver, resuming from a checkpoint (imported lazily:
    aggregating needs no training)."""
    from acp_flower.runners.local import run_experiment

    return run_experiment(cfg, out_dir, progress=True, resume=True)


def execute(plan: Sequence[tuple[ExperimentConfig, Path]], runner: Runner, dry_run: bool = False) -> list[Path]:
    """Run what is not finished yet; return the run directories that failed."""
    failed = []
    for i, (cfg, run_dir) in enumerate(plan, 1):
        tag = f"[{i}/{len(plan)}] {run_dir.parent.name}/{run_dir.name}"
        if dry_run:
            print(f"{tag}: {report.run_status(run_dir)}")
            continue
        if not report.prepare_run_dir(run_dir, cfg.to_dict()):
            print(f"{tag}: done, skipped", flush=True)
            continue
        print(f"{tag}: running ({cfg.dataset}, {cfg.codec}, {cfg.rounds} rounds)", flush=True)
        start = time.perf_counter()
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            runner(cfg, run_dir)
        except Exception:  # one failing run must not lose the others; reported at the end
            traceback.print_exc()
            failed.append(run_dir)
            continue
        print(f"{tag}: finished in {time.perf_counter() - start:.0f} s", flush=True)
    return failed


def main(argv: Sequence[str] | None = None, runner: Runner = local_runner) -> int:
    """Run (unless --no-run / --dry-run) and report the chosen figure(s); exit status 1 on failure."""
    args = parse_args(argv)
    manifest = report.load_manifest(args.manifest)
    if args.figure not in (*manifest, "all"):
        print(f"unknown --figure {args.figure!r}; known: {', '.join(manifest)}, all", file=sys.stderr)
        return 2
    seeds = parse_seeds(args.seeds)
    figures = list(manifest.values()) if args.figure == "all" else [manifest[args.figure]]
    plan = plan_runs(figures, args, seeds)
    try:
        failed = [] if args.no_run else execute(plan, runner, dry_run=args.dry_run)
    except ValueError as exc:  # a finished run made with another config: never overwrite it
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        return 0
    for figure in figures:
        result = report.write_figure_report(figure, args.out / "runs", args.out / f"fig{figure.id}", seeds,
                                            partial=args.partial)
        print(f"\n{result['markdown']}")
        for path in result["plots"]:
            print(f"plot: {path}")
        if result["missing"]:
            print(f"{len(result['missing'])} run(s) of figure {figure.id} not finished")
    for run_dir in failed:
        print(f"FAILED: {run_dir}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
