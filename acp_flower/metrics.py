"""Run outputs shared by every driver: metrics.csv (a row per round), summary.json, config.toml."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from acp_flower.config import ExperimentConfig
from acp_flower.exchanges import get_exchange
from acp_flower.link import ClientTraffic, round_times
from acp_flower.runtime.checkpoint import Checkpoint, load_checkpoint
from acp_flower.runtime.protocol import RoundOutcome
from acp_flower.runtime.stats import ServerStats

log = logging.getLogger("acp_flower")

METRIC_COLUMNS = (
    "round", "test_accuracy", "test_loss", "train_loss", "train_accuracy", "bytes_up", "bytes_down",
    "ideal_bits_up", "ideal_bits_down", "mean_prune_ratio", "clients", "sampled", "wall_s",
    "aux_test_accuracy", "aux_test_loss", "aux_train_loss", "aux_train_accuracy",
    "exchanges", "comm_s", "sim_wall_s",
    "client_params", "client_params_nonzero", "client_flops", "client_flops_sparse",
)
"""metrics.csv columns. ``aux_*``: the client's own prediction (decoupled SL's auxiliary head:
test accuracy/loss on the uncompressed smashed data, training loss/accuracy of its local
loss); empty when the exchange has none. ``clients``: clients that finished the round,
of ``sampled`` drawn for it (``clients_per_round``; a failed, skipped client is the
difference). ``exchanges``: mini-batch exchanges of the round.
``comm_s``/``sim_wall_s``: the link model's communication time and communication + measured
client compute (``acp_flower.link``). ``client_*``: the global client model after the round:
parameters, non-zero parameters, forward FLOPs per sample, dense and scaled by weight
density (``acp_flower.models.cost``)."""
TIMING_COLUMNS = ("wall_s", "sim_wall_s")
"""Columns that hold measured wall times: the only ones that differ between runs of one seed."""
RESULT_FILES = ("metrics.csv", "summary.json", "config.toml")
"""What a run writes to its out-dir (besides ``CHECKPOINT_FILE`` while it is unfinished)."""
PRUNE_TRACE_FILE = "prune_trace.csv"
"""Local runner only: the pruning ratio of every uploaded mini-batch (eq. (10) study)."""


def check_out_dir(out_dir: Path, overwrite: bool = False) -> None:
    """Refuse to mix a new run into a directory that already holds results."""
    existing = [name for name in RESULT_FILES if (out_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"output directory {out_dir} already holds {existing}; choose another or overwrite")
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output path {out_dir} exists and is not a directory")


def finished_run(out_dir: Path) -> bool:
    """``out_dir`` holds a run that completed (its summary.json says so)."""
    path = out_dir / "summary.json"
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("status", "completed") == "completed"
    except (json.JSONDecodeError, AttributeError):
        return False


def resume_point(out_dir: str | Path | None, cfg: ExperimentConfig, *, resume: bool,
                 overwrite: bool = False) -> Checkpoint | None:
    """Where a run writing to ``out_dir`` starts: the checkpoint there when resuming, else None.

    Fails before any work: on a directory that holds another run's results (unless
    ``overwrite``, or ``resume`` of an unfinished run, which then starts over), on resuming
    a completed run, and on a checkpoint that is unreadable or of another config.
    """
    if out_dir is None:
        return None
    ckpt = load_checkpoint(out_dir, cfg) if resume else None
    if ckpt is None:
        if resume and finished_run(Path(out_dir)):
            raise FileExistsError(f"output directory {out_dir} holds a finished run; nothing to resume")
        check_out_dir(Path(out_dir), overwrite or resume)
    return ckpt


def outcome_row(outcome: RoundOutcome, cfg: ExperimentConfig) -> dict[str, Any]:
    """One metrics.csv row from a round's outcome (``cfg``: the link model's settings)."""
    traffic = sum((r.traffic for r in outcome.results[1:]), outcome.results[0].traffic) if outcome.results else None
    steps = traffic.steps if traffic else 0
    local = sum((r.local_stats for r in outcome.results), ServerStats())
    nan = float("nan")
    clients = [ClientTraffic(r.client_id, r.traffic.steps, r.traffic.bytes_up, r.traffic.bytes_down, r.train_s)
               for r in outcome.results]
    comm, sim_wall = round_times(cfg.options("link"), cfg.seed, clients, blocking=get_exchange(cfg.exchange).blocking,
                                 parallel=outcome.parallel)
    return {
        "round": outcome.server_round,
        "test_accuracy": outcome.test_accuracy,
        "test_loss": outcome.test_loss,
        "train_loss": outcome.server_stats.mean_loss,
        "train_accuracy": outcome.server_stats.accuracy,
        "bytes_up": traffic.bytes_up if traffic else 0,
        "bytes_down": traffic.bytes_down if traffic else 0,
        "ideal_bits_up": traffic.ideal_bits_up if traffic else 0,
        "ideal_bits_down": traffic.ideal_bits_down if traffic else 0,
        "mean_prune_ratio": traffic.prune_ratio_sum / steps if steps else float("nan"),
        "clients": len(outcome.results),
        "sampled": outcome.sampled or len(outcome.results),
        "wall_s": outcome.wall_s,
        "aux_test_accuracy": outcome.evaluation.get("aux_test_accuracy", nan),
        "aux_test_loss": outcome.evaluation.get("aux_test_loss", nan),
        "aux_train_loss": local.mean_loss,
        "aux_train_accuracy": local.accuracy,
        "exchanges": steps,
        "comm_s": comm,
        "sim_wall_s": sim_wall,
        **{key: outcome.evaluation.get(key, nan) for key in
           ("client_params", "client_params_nonzero", "client_flops", "client_flops_sparse")},
    }


def summarize(rows: list[dict[str, Any]], targets: tuple[float, ...]) -> dict[str, Any]:
    """Final/best accuracy, totals, and the round and cumulative bytes to each target."""
    frame = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    summary: dict[str, Any] = {"rounds_completed": len(frame)}
    if frame.empty:
        return summary | {"final_accuracy": None, "best_accuracy": None, "targets": {}}
    up, down = frame["bytes_up"].cumsum(), frame["bytes_down"].cumsum()
    best = int(frame["test_accuracy"].idxmax()) if frame["test_accuracy"].notna().any() else 0
    summary.update(
        final_accuracy=float(frame["test_accuracy"].iloc[-1]),
        best_accuracy=float(frame["test_accuracy"].max()),
        best_round=int(frame["round"].iloc[best]),
        total_bytes_up=int(up.iloc[-1]), total_bytes_down=int(down.iloc[-1]),
        total_ideal_bits_up=int(frame["ideal_bits_up"].sum()),
        total_ideal_bits_down=int(frame["ideal_bits_down"].sum()),
        mean_bytes_per_round=float((frame["bytes_up"] + frame["bytes_down"]).mean()),
        total_wall_s=float(frame["wall_s"].sum()),
    )
    summary["targets"] = {}
    for target in targets:
        hit = frame.index[frame["test_accuracy"] >= target]
        if len(hit) == 0:
            summary["targets"][f"{target:g}"] = None
            continue
        i = int(hit[0])
        summary["targets"][f"{target:g}"] = {
            "round": int(frame["round"].iloc[i]), "bytes_up": int(up.iloc[i]),
            "bytes_total": int(up.iloc[i] + down.iloc[i]),
        }
    return summary


class RunRecorder:
    """Collects per-round rows; with an ``out_dir`` writes config.toml at once, metrics.csv
    row by row (a long run's progress is visible) and summary.json at ``finish``.

    Parameters
    ----------
    out_dir : Path or None
        Output directory (created), or None to keep results in memory only.
    cfg : ExperimentConfig
        The resolved config, saved beside the results.
    overwrite : bool
        Allow replacing results already in ``out_dir``.
    resume_rows : list of dict, optional
        Continue a run from a checkpoint: its rows so far. metrics.csv is rewritten with
        them and prune_trace.csv cut to their rounds (a round recorded after the
        checkpoint was taken is dropped and will be run again).
    """

    def __init__(self, out_dir: str | Path | None, cfg: ExperimentConfig, *, overwrite: bool = False,
                 resume_rows: list[dict[str, Any]] | None = None) -> None:
        self.cfg, self.rows = cfg, list(resume_rows or [])
        self.out_dir = Path(out_dir) if out_dir else None
        if self.out_dir is not None:
            if resume_rows is None:
                check_out_dir(self.out_dir, overwrite)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "summary.json").unlink(missing_ok=True)
            self._cut_prune_trace(self.rows[-1]["round"] if self.rows else 0)
            (self.out_dir / "config.toml").write_text(cfg.to_toml())
            with (self.out_dir / "metrics.csv").open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(METRIC_COLUMNS)
                writer.writerows([_fmt(row.get(c, math.nan)) for c in METRIC_COLUMNS] for row in self.rows)

    def _cut_prune_trace(self, last_round: int) -> None:
        path = self.out_dir / PRUNE_TRACE_FILE
        if last_round == 0 or not path.exists():
            path.unlink(missing_ok=True)
            return
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= last_round]
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as fh:
            csv.writer(fh).writerows(kept)
        tmp.replace(path)

    def record(self, outcome: RoundOutcome) -> dict[str, Any]:
        """Add a round: append its row to metrics.csv and log one line."""
        row = outcome_row(outcome, self.cfg)
        self.rows.append(row)
        if self.out_dir is not None:
            with (self.out_dir / "metrics.csv").open("a", newline="") as fh:
                csv.writer(fh).writerow([_fmt(row[c]) for c in METRIC_COLUMNS])
        log.info(
            "round %d: test_acc=%.4f train_loss=%.4f bytes_up=%d bytes_down=%d prune=%.3f (%.1fs)",
            row["round"], row["test_accuracy"], row["train_loss"], row["bytes_up"], row["bytes_down"],
            row["mean_prune_ratio"], row["wall_s"],
        )
        return row

    def record_prune_trace(self, server_round: int, trace: list[tuple[int, float]]) -> None:
        """Append a round's per-upload pruning ratios to prune_trace.csv (a row per mini-batch)."""
        if self.out_dir is None:
            return
        path = self.out_dir / PRUNE_TRACE_FILE
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(("round", "step", "tail_slot", "prune_ratio"))
            writer.writerows((server_round, i, slot, repr(p)) for i, (slot, p) in enumerate(trace, 1))

    def finish(self, **extra: Any) -> dict[str, Any]:
        """Write summary.json (with ``extra`` entries, e.g. failures) and return it."""
        summary = summarize(self.rows, self.cfg.target_accuracies)
        stop = self.cfg.stop_accuracy
        summary["stopped_early"] = bool(stop > 0 and self.rows and len(self.rows) < self.cfg.rounds
                                        and self.rows[-1]["test_accuracy"] >= stop)
        summary |= extra
        if self.out_dir is not None:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
        return summary

    def fail(self, exc: BaseException, **extra: Any) -> dict[str, Any]:
        """Write summary.json of a run that stopped on ``exc`` (the rows so far stay)."""
        log.error("run stopped: %s", exc)
        return self.finish(status="failed", reason=f"{type(exc).__name__}: {exc}", **extra)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(METRIC_COLUMNS))


def _fmt(value: Any) -> Any:
    return repr(value) if isinstance(value, float) and math.isfinite(value) else value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {value!r}")
