"""Diagnostic: how much of an ACP-SL model's test accuracy depends on the inference mask?

At inference ACP-SL has no labels, so LCIS cannot score channels; the acp codec keeps the
top channels by S_hist (eq. 7) at the last training ratio (``acp_eval_mask = "hist"``).
This script takes a local run's ``checkpoint.pt`` (the state after a round) and evaluates
the same global head + tail with other masks:

  hist_last         the codec's own inference mask (reproduces metrics.csv's test accuracy)
  hist_base         the same S_hist, at P_base
  hist_client<c>    client c's own S_hist at P_base (every client keeps its own codec state;
                    ``hist_last`` is the last client's)
  hist_mean         the mean of the clients' S_hist at P_base
  l0_batch          per test batch, the channels with most non-zero elements, at P_base
  all               every channel (no pruning)
  lcis_test_labels  per test batch, LCIS's S_inst (eq. 6) computed WITH THE TEST LABELS, at
                    P_base. Not a valid test accuracy (labels leak into the input): it shows
                    what a label-aware mask at test time would be worth.

With ``--train-samples N`` the same masks are also evaluated on N training images (no
augmentation), to separate a train/test gap from a mask effect. With ``--recalibrate N``
each mask is evaluated once more after the tail's BatchNorm running statistics have been
re-estimated under that mask on N other training images (as config key
``eval_bn_recalibration`` does in a run; ``acp_flower.runtime.evaluate.recalibrate_batchnorm``).
Prints a markdown table; ``--out`` also writes it as CSV.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from acp_flower.codecs.acp import AcpCodec, lcis_instant_scores
from acp_flower.config import ExperimentConfig
from acp_flower.data import prepare_data
from acp_flower.runtime.common import build_split, resolve_device
from acp_flower.runtime.evaluate import recalibrate_batchnorm

MaskFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(smashed B x N x H x W, labels B) -> dense smashed with the pruned channels zeroed."""


def _keep(smashed: torch.Tensor, scores: torch.Tensor, ratio: float) -> torch.Tensor:
    return AcpCodec._prune(smashed, scores, ratio).to_dense().to(smashed.device)


def mask_variants(ckpt: dict, cfg: ExperimentConfig) -> dict[str, MaskFn]:
    """The masks of the module docstring, built from a checkpoint's codec states."""
    p = cfg.p_base
    eval_state = ckpt["strategy"]["codec_eval"]
    last_ratio, s_hist = float(eval_state["last_ratio"]), eval_state["s_hist"]
    client_hist = {cid: state["codec"]["s_hist"] for cid, state in sorted(ckpt["clients"].items())}
    variants: dict[str, MaskFn] = {
        "hist_last": lambda a, y: _keep(a, s_hist, last_ratio),
        "hist_base": lambda a, y: _keep(a, s_hist, p),
    }
    for cid, hist in client_hist.items():
        variants[f"hist_client{cid}"] = lambda a, y, h=hist: _keep(a, h, p)
    mean_hist = torch.stack(list(client_hist.values())).mean(0)
    variants["hist_mean"] = lambda a, y: _keep(a, mean_hist, p)
    variants["l0_batch"] = lambda a, y: _keep(a, (a != 0).sum(dim=(0, 2, 3)).double().cpu(), p)
    variants["all"] = lambda a, y: a
    variants["lcis_test_labels"] = lambda a, y: _keep(a, lcis_instant_scores(a, y).cpu(), p)
    return variants


@torch.no_grad()
def evaluate(head: torch.nn.Module, tails: dict[str, torch.nn.Module], data: Dataset,
             masks: dict[str, MaskFn], batch_size: int, device: torch.device) -> dict[str, float]:
    """Accuracy on ``data`` of head + ``tails[name]`` under ``masks[name]`` (one head pass per batch)."""
    correct = dict.fromkeys(masks, 0)
    total = 0
    for x, y in DataLoader(data, batch_size=batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        smashed = head(x)
        for name, mask in masks.items():
            correct[name] += int((tails[name](mask(smashed, y)).argmax(1) == y).sum())
        total += y.numel()
    return {name: c / total for name, c in correct.items()}


def recalibrate_bn(head: torch.nn.Module, tail: torch.nn.Module, mask: MaskFn, data: Dataset,
                   batch_size: int, device: torch.device) -> torch.nn.Module:
    """A copy of ``tail`` whose BatchNorm statistics are re-estimated under ``mask`` on ``data``."""
    tail = copy.deepcopy(tail)
    with torch.no_grad():
        batches = ((x.to(device), y.to(device)) for x, y in DataLoader(data, batch_size=batch_size, shuffle=False))
        recalibrate_batchnorm(tail, (mask(head(x), y) for x, y in batches))
    return tail


def _markdown(table: pd.DataFrame) -> str:
    cols = [table.index.name, *table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += [f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + " |" for name, row in table.iterrows()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="checkpoint.pt of an ACP-SL local run")
    parser.add_argument("--data-dir", help="dataset root (default: the run's data_dir)")
    parser.add_argument("--train-samples", type=int, default=0, help="also evaluate on N training images")
    parser.add_argument("--recalibrate", type=int, default=0, metavar="N",
                        help="also evaluate after re-estimating the tail's BatchNorm statistics "
                             "under each mask on N (other) training images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="write the table as CSV here")
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"checkpoint {args.checkpoint} does not exist")
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "config" not in ckpt:
        parser.error(f"{args.checkpoint} is not a checkpoint of the local runner")
    cfg = ExperimentConfig.from_dict(ckpt["config"])
    if cfg.codec != "acp":
        parser.error(f"{args.checkpoint} is a {cfg.codec!r} run; this diagnostic needs codec 'acp'")
    device = resolve_device(args.device)
    data = prepare_data(cfg.replace(augment=False, download=False, data_dir=args.data_dir or cfg.data_dir))
    pool = np.sort(np.concatenate(data.partitions))  # the training images the run used
    if args.train_samples + args.recalibrate > len(pool):
        parser.error(f"--train-samples + --recalibrate exceed the run's {len(pool)} training images")

    split = build_split(cfg)
    head, tail = split.head.to(device).eval(), split.tail.to(device).eval()
    head.load_state_dict(ckpt["strategy"]["head"])
    tail.load_state_dict(ckpt["strategy"]["tail"])
    masks = mask_variants(ckpt, cfg)

    order = np.random.default_rng(0).permutation(pool)  # disjoint samples for the two uses
    sets = {"test": data.test_set}
    if args.train_samples:
        sets[f"train ({args.train_samples} images)"] = Subset(data.train_set, np.sort(order[:args.train_samples]).tolist())
    tails = dict.fromkeys(masks, tail)
    rows = {name: evaluate(head, tails, subset, masks, cfg.eval_batch_size, device) for name, subset in sets.items()}
    if args.recalibrate:
        calib = Subset(data.train_set, np.sort(order[-args.recalibrate:]).tolist())
        tails = {name: recalibrate_bn(head, tail, mask, calib, cfg.eval_batch_size, device)
                 for name, mask in masks.items()}
        rows[f"test, BN recalibrated ({args.recalibrate} train images)"] = evaluate(
            head, tails, data.test_set, masks, cfg.eval_batch_size, device)
    table = pd.DataFrame(rows).mul(100).round(2)
    table.index.name = "mask"
    recorded = ckpt["rows"][-1]["test_accuracy"] * 100
    print(f"# {args.checkpoint} (round {ckpt['server_round']}; metrics.csv test accuracy {recorded:.2f}%)")
    n = ckpt["strategy"]["codec_eval"]["s_hist"].numel()
    print(f"# masks at P_base = {cfg.p_base} keep {n - round(cfg.p_base * n)} of {n} channels, "
          f"eval batch {cfg.eval_batch_size}; accuracy in %")
    print(_markdown(table))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
