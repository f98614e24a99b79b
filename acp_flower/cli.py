"""Command line: `acp-flower run` (local simulation), `acp-flower simulate` (the Flower app) and `acp-flower data fetch`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    from acp_flower.config import ExperimentConfig
    from acp_flower.runners.local import run_experiment

    cfg = ExperimentConfig.from_toml(args.config, args.set)
    frame = run_experiment(cfg, Path(args.out), progress=not args.no_progress, overwrite=args.overwrite,
                           checkpoint=args.checkpoint, resume=args.resume)
    last = frame.iloc[-1]
    print(f"done: {len(frame)} rounds, final test accuracy {last['test_accuracy']:.4f}; results in {args.out}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from acp_flower.data.fetch import fetch_dataset

    path = fetch_dataset(args.name, Path(args.root), progress=not args.no_progress)
    print(f"{args.name} ready under {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acp-flower", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log one line per round")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a split-learning simulation in this process")
    run.add_argument("--config", type=Path, help="flat TOML file of config keys (defaults if omitted)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key (repeatable), e.g. --set codec=acp --set rounds=3")
    run.add_argument("--out", required=True, help="output directory for metrics.csv, summary.json, config.toml")
    run.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    run.add_argument("--checkpoint", action="store_true",
                     help="write OUT/checkpoint.pt after every round (removed when the run finishes)")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run from OUT/checkpoint.pt (implies --checkpoint)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.set_defaults(func=_cmd_run)

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download or convert a dataset into torchvision layout")
    fetch.add_argument("name", choices=["cifar10", "fashion-mnist", "mnist"])
    fetch.add_argument("--root", required=True, help="dataset root directory (the config's data_dir)")
    fetch.add_argument("--no-progress", action="store_true")
    fetch.set_defaults(func=_cmd_fetch)

    from acp_flower.apps.launch import register_cli  # imports no Flower: `run` stays light

    register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from acp_flower.data.fetch import FetchError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, FetchError) as exc:
        print(f"acp-flower: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
