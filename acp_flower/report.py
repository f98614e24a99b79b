"""Aggregate, tabulate and plot paper-reproduction runs (pure pandas/matplotlib, no flwr/ray)."""

from __future__ import annotations

import json
import math
import shutil
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from acp_flower.config import ExperimentConfig, config_diff
from acp_flower.metrics import PRUNE_TRACE_FILE
from acp_flower.runtime.checkpoint import CHECKPOINT_FILE

__all__ = [
    "Curve", "Panel", "Figure", "load_manifest", "run_dir_for", "run_status", "prepare_run_dir",
    "read_metrics", "read_prune_trace", "first_reach", "summarize_run", "collect_runs", "aggregate", "to_markdown",
    "mean_curve", "plot_panel", "write_figure_report",
]

METRICS_FILE, SUMMARY_FILE, CONFIG_FILE = "metrics.csv", "summary.json", "config.toml"
# Keys that may differ between the config a run was made with and the one asked for now
# without changing its results (where it ran, where files live).
BYTES_PER_MB = 1e6


@dataclass(frozen=True)
class Curve:
    """One curve of a panel: a config file and what the paper says about it."""

    label: str
    """Legend label."""
    config: str
    """File name in the paper config directory."""
    paper_final_accuracy: float | None = None
    """Final test accuracy in percent stated by the paper (None = not stated)."""
    paper_rounds: dict[float, float] = field(default_factory=dict)
    """Target accuracy (fraction) -> rounds to reach it stated by the paper."""

    @property
    def run_name(self) -> str:
        """Name of the run directory: the config's file stem (shared across figures)."""
        return Path(self.config).stem


@dataclass(frozen=True)
class Panel:
    """One panel (one plot) of a figure."""

    id: str
    title: str
    curves: tuple[Curve, ...]
    extra_metrics: tuple[str, ...] = ()
    """metrics.csv columns plotted against the round besides test accuracy."""
    prune_trace: bool = False
    """Also plot the per-mini-batch pruning ratio (prune_trace.csv of the first seed)."""


@dataclass(frozen=True)
class Figure:
    """A figure of the paper (or a reproduction-only comparison such as eq10)."""

    id: str
    title: str
    panels: tuple[Panel, ...]
    note: str = ""


def load_manifest(path: str | Path) -> dict[str, Figure]:
    """Read the figure manifest (TOML with ``[[figure]]``, ``[[figure.panel]]``, ``curve``).

    Parameters
    ----------
    path : str or Path
        The manifest file, e.g. ``experiments/paper/manifest.toml``.

    Returns
    -------
    dict[str, Figure]
        Figures by id, in file order.
    """
    with Path(path).open("rb") as fh:
        raw = tomllib.load(fh)
    figures: dict[str, Figure] = {}
    for fig in raw.get("figure", []):
        panels = tuple(
            Panel(id=p["id"], title=p["title"], extra_metrics=tuple(p.get("extra_metrics", ())),
                  prune_trace=bool(p.get("prune_trace", False)), curves=tuple(_curve(c) for c in p["curve"]))
            for p in fig["panel"]
        )
        if str(fig["id"]) in figures:
            raise ValueError(f"manifest {path}: duplicate figure id {fig['id']!r}")
        figures[str(fig["id"])] = Figure(str(fig["id"]), fig["title"], panels, fig.get("note", ""))
    return figures


def _curve(raw: Mapping[str, Any]) -> Curve:
    rounds = {float(k): float(v) for k, v in raw.get("paper_rounds", {}).items()}
    return Curve(raw["label"], raw["config"], raw.get("paper_final_accuracy"), rounds)


# ---------------------------------------------------------------- run directories
def run_dir_for(runs_root: str | Path, curve: Curve, seed: int) -> Path:
    """Directory of one run: ``<runs_root>/<config stem>/seed<seed>``."""
    return Path(runs_root) / curve.run_name / f"seed{seed}"


def run_status(run_dir: str | Path) -> str:
    """``"complete"`` (summary.json readable), ``"partial"`` (directory without one) or ``"missing"``."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return "missing"
    try:
        json.loads((run_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return "partial"
    return "complete"


def prepare_run_dir(run_dir: str | Path, expected_config: Mapping[str, Any] | None = None) -> bool:
    """Make a run directory ready; return whether the run must be (re)started.

    A complete run is kept (False); an interrupted one is deleted (True) unless it has a
    checkpoint to resume from (kept, True); a missing one is to be made (True).

    Parameters
    ----------
    run_dir : str or Path
        The run's output directory.
    expected_config : mapping, optional
        The resolved config (``ExperimentConfig.to_dict()``) the run should have. If a
        complete run's ``config.toml`` differs in one of its keys that matters (all but
        ``RESULT_NEUTRAL_KEYS``; extra keys in the file are ignored, missing ones count as defaults), ``ValueError`` is
        raised rather than reusing or deleting the run.
    """
    status = run_status(run_dir)
    if status == "partial" and not (Path(run_dir) / CHECKPOINT_FILE).exists():
        shutil.rmtree(run_dir)
    if status != "complete":
        return True
    if expected_config is not None:
        with (Path(run_dir) / CONFIG_FILE).open("rb") as fh:
            saved = tomllib.load(fh)
        diff = config_diff(saved, ExperimentConfig.from_dict(dict(expected_config)))
        if diff:
            raise ValueError(
                f"{run_dir} holds a finished run with a different config (keys {diff}); "
                "choose another --out or delete it"
            )
    return False


# ---------------------------------------------------------------- one run
def read_prune_trace(run_dir: str | Path) -> pd.DataFrame | None:
    """prune_trace.csv of a run (local runner) with a global ``iteration`` column, or None."""
    path = Path(run_dir) / PRUNE_TRACE_FILE
    if not path.exists():
        return None
    trace = pd.read_csv(path).sort_values(["round", "step"]).reset_index(drop=True)
    trace["iteration"] = range(1, len(trace) + 1)
    return trace


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """metrics.csv of a run, sorted by round, with cumulative traffic columns added.

    Added columns: ``cum_mb`` (cumulative bytes_up + bytes_down, in MB = 1e6 bytes) and
    ``cum_mb_up`` (cumulative bytes_up in MB).
    """
    metrics = pd.read_csv(Path(run_dir) / METRICS_FILE).sort_values("round").reset_index(drop=True)
    metrics["cum_mb"] = (metrics["bytes_up"] + metrics["bytes_down"]).cumsum() / BYTES_PER_MB
    metrics["cum_mb_up"] = metrics["bytes_up"].cumsum() / BYTES_PER_MB
    return metrics


def first_reach(metrics: pd.DataFrame, target: float) -> tuple[int | None, float | None]:
    """Round and cumulative MB (up + down) when test accuracy first reaches ``target``.

    Returns ``(None, None)`` if it never does.
    """
    hit = metrics[metrics["test_accuracy"] >= target - 1e-12]
    if hit.empty:
        return None, None
    row = hit.iloc[0]
    return int(row["round"]), float(row["cum_mb"])


def summarize_run(metrics: pd.DataFrame, targets: Iterable[float]) -> dict[str, Any]:
    """Final/best accuracy, rounds, traffic and, per target, rounds and MB to reach it.

    Keys: final_accuracy, best_accuracy, rounds_completed, total_mb, wall_s and, per
    target t, ``rounds_to_<t>`` and ``mb_to_<t>`` (None when never reached).
    """
    out: dict[str, Any] = {
        "final_accuracy": float(metrics["test_accuracy"].iloc[-1]),
        "best_accuracy": float(metrics["test_accuracy"].max()),
        "rounds_completed": int(metrics["round"].max()),
        "total_mb": float(metrics["cum_mb"].iloc[-1]),
        "wall_s": float(metrics["wall_s"].sum()) if "wall_s" in metrics else math.nan,
    }
    for t in targets:
        out[f"rounds_to_{t:g}"], out[f"mb_to_{t:g}"] = first_reach(metrics, t)
    return out


def _panel_targets(panel: Panel, done: Mapping[str, Mapping[int, Path]]) -> list[float]:
    """Collect the paper's targets of a panel and the ``target_accuracies`` of its finished runs."""
    targets = {t for c in panel.curves for t in c.paper_rounds}
    for run_dir in (d for by_seed in done.values() for d in by_seed.values()):
        with (run_dir / CONFIG_FILE).open("rb") as fh:
            targets.update(float(t) for t in tomllib.load(fh).get("target_accuracies", []))
    return sorted(targets)


# ---------------------------------------------------------------- aggregation
def _finished(panel: Panel, runs_root: str | Path, seeds: Sequence[int],
              partial: bool = False) -> dict[str, dict[int, Path]]:
    """Curve label -> seed -> directory, for the panel's runs with a complete summary.json
    (with ``partial``, also unfinished runs with at least one round in metrics.csv)."""
    dirs = {c.label: {s: run_dir_for(runs_root, c, s) for s in seeds} for c in panel.curves}
    return {label: {s: d for s, d in by_seed.items() if run_status(d) == "complete"
                    or (partial and run_status(d) == "partial" and _has_rounds(d))}
            for label, by_seed in dirs.items()}


def _has_rounds(run_dir: Path) -> bool:
    try:
        return len(read_metrics(run_dir)) > 0
    except (OSError, ValueError):
        return False


def collect_runs(figure: Figure, runs_root: str | Path, seeds: Sequence[int],
                 partial: bool = False) -> pd.DataFrame:
    """One row per finished run of the figure (panel, curve, seed + ``summarize_run`` keys).

    Runs without a complete summary.json are left out unless ``partial`` (then they count
    with the rounds they have, ``complete`` False). Every row also carries the panel's
    targets as ``targets`` (a tuple) so that ``aggregate`` can lay out its columns.
    """
    rows = []
    for panel in figure.panels:
        done = _finished(panel, runs_root, seeds, partial)
        targets = _panel_targets(panel, done)
        for curve in panel.curves:
            for seed, run_dir in done[curve.label].items():
                rows.append({"figure": figure.id, "panel": panel.id, "curve": curve.label, "config": curve.config,
                             "seed": seed, "targets": tuple(targets),
                             "complete": run_status(run_dir) == "complete",
                             **summarize_run(read_metrics(run_dir), targets)})
    return pd.DataFrame(rows)


def aggregate(runs: pd.DataFrame, figure: Figure) -> pd.DataFrame:
    """Mean and std (ddof=1, NaN for one seed) over seeds, per panel and curve.

    Accuracies are reported in percent. For each target t: ``rounds_to_<t>_mean/_std``
    over the seeds that reached it, ``reached_<t>`` (count) and ``mb_to_<t>_mean``; paper
    columns ``paper_final_accuracy`` and ``paper_rounds_to_<t>`` come from the manifest.
    """
    paper = {(p.id, c.label): c for p in figure.panels for c in p.curves}
    rows = []
    for (panel, label), g in runs.groupby(["panel", "curve"], sort=False):
        curve = paper[panel, label]
        row: dict[str, Any] = {"panel": panel, "curve": label, "config": curve.config, "seeds": len(g)}
        for key in ("final_accuracy", "best_accuracy"):
            row[f"{key}_mean"] = 100 * g[key].mean()
            row[f"{key}_std"] = 100 * g[key].std(ddof=1)
        row["paper_final_accuracy"] = curve.paper_final_accuracy
        row["rounds_completed_mean"] = g["rounds_completed"].mean()
        row["complete"] = bool(g["complete"].all()) if "complete" in g else True
        row["total_mb_mean"] = g["total_mb"].mean()
        row["wall_s_total"] = g["wall_s"].sum()
        for t in g["targets"].iloc[0]:
            reached = pd.to_numeric(g[f"rounds_to_{t:g}"], errors="coerce").dropna()
            row[f"reached_{t:g}"] = len(reached)
            row[f"rounds_to_{t:g}_mean"] = reached.mean() if len(reached) else math.nan
            row[f"rounds_to_{t:g}_std"] = reached.std(ddof=1) if len(reached) > 1 else math.nan
            row[f"mb_to_{t:g}_mean"] = pd.to_numeric(g[f"mb_to_{t:g}"], errors="coerce").mean()
            row[f"paper_rounds_to_{t:g}"] = curve.paper_rounds.get(t, math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: Any, std: Any, digits: int = 2) -> str:
    if mean is None or pd.isna(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if std is None or pd.isna(std) else f" ± {std:.{digits}f}")


def _target_cell(row: pd.Series, t: float) -> str:
    if f"reached_{t:g}" not in row or pd.isna(row[f"reached_{t:g}"]):
        return ""
    cell = f"{t:.0%}: {_pm(row[f'rounds_to_{t:g}_mean'], row[f'rounds_to_{t:g}_std'], 1)}"
    cell += f" ({int(row[f'reached_{t:g}'])}/{int(row['seeds'])})"
    if not pd.isna(row[f"mb_to_{t:g}_mean"]):
        cell += f", {row[f'mb_to_{t:g}_mean']:.0f} MB"
    paper = row.get(f"paper_rounds_to_{t:g}")
    return cell + (f"; paper {paper:.0f}" if paper is not None and not pd.isna(paper) else "")


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown table of ``aggregate``'s output, ours next to the paper's numbers.

    Target cells read ``65%: 46.0 ± 2.0 (3/3), 1234 MB; paper 46``: rounds to the target
    (mean ± std over the seeds that reached it), seeds that reached it, mean cumulative MB
    (up + down) at that round, and the paper's rounds.
    """
    header = ("| Panel | Curve | Seeds | Final acc. % | Best acc. % | Paper final % "
              "| Rounds to target | Total MB |\n|---|---|---|---|---|---|---|---|\n")
    targets = sorted({float(c.split("_")[1]) for c in table.columns if c.startswith("reached_")})
    lines = []
    for _, row in table.iterrows():
        cells = "; ".join(c for c in (_target_cell(row, t) for t in targets) if c) or "-"
        paper = row["paper_final_accuracy"]
        curve = row["curve"] if row.get("complete", True) else (
            f"{row['curve']} (partial: {row['rounds_completed_mean']:.0f} rounds)")
        lines.append(
            f"| {row['panel']} | {curve} | {int(row['seeds'])} "
            f"| {_pm(row['final_accuracy_mean'], row['final_accuracy_std'])} "
            f"| {_pm(row['best_accuracy_mean'], row['best_accuracy_std'])} "
            f"| {'-' if paper is None or pd.isna(paper) else f'{paper:.2f}'} | {cells} "
            f"| {row['total_mb_mean']:.0f} |"
        )
    return header + "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plots
def mean_curve(frames: Sequence[pd.DataFrame], column: str) -> pd.DataFrame:
    """Per-round mean and std (ddof=1) of ``column`` over runs, with the mean cumulative MB.

    Rounds present in only some runs average over those runs. Columns: round, mean, std,
    cum_mb, n.
    """
    both = pd.concat([f[["round", column, "cum_mb"]] for f in frames], ignore_index=True)
    grouped = both.groupby("round")
    out = pd.DataFrame({"mean": grouped[column].mean(), "std": grouped[column].std(ddof=1),
                        "cum_mb": grouped["cum_mb"].mean(), "n": grouped[column].count()})
    return out.reset_index()


def _draw(ax: Any, column: str, x: str, frames: Mapping[str, Sequence[pd.DataFrame]],
          targets: Sequence[float]) -> None:
    """Draw the seed mean (line) and std (band) of ``column`` against ``x`` for every curve."""
    scale = 100.0 if column == "test_accuracy" else 1.0
    for label, runs in frames.items():
        runs = [r for r in runs if column in r]
        if not runs:
            continue
        mc = mean_curve(runs, column)
        (line,) = ax.plot(mc[x], scale * mc["mean"], marker=".", markersize=3, label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(mc[x], scale * (mc["mean"] - mc["std"]), scale * (mc["mean"] + mc["std"]),
                            color=line.get_color(), alpha=0.2)
    for t in targets if column == "test_accuracy" else ():
        ax.axhline(100 * t, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("round" if x == "round" else "cumulative MB sent (up + down)")
    ax.set_ylabel("test accuracy (%)" if column == "test_accuracy" else column)
    ax.grid(alpha=0.3)


def plot_panel(panel: Panel, frames: Mapping[str, Sequence[pd.DataFrame]], path: str | Path,
               targets: Sequence[float] = (), traces: Mapping[str, pd.DataFrame] | None = None) -> Path:
    """Write one PNG: accuracy vs round, accuracy vs cumulative MB, then ``extra_metrics``.

    Parameters
    ----------
    panel : Panel
        The panel (title, extra metrics).
    frames : mapping of str to sequence of DataFrame
        Curve label -> metrics of its runs (one per seed, from ``read_metrics``).
    path : str or Path
        PNG to write.
    targets : sequence of float
        Target accuracies drawn as dashed horizontal lines.
    traces : mapping of str to DataFrame, optional
        Curve label -> ``read_prune_trace`` of one run: adds a pruning ratio vs iteration plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = [("test_accuracy", "round"), ("test_accuracy", "cum_mb")] + [(m, "round") for m in panel.extra_metrics]
    fig, axes = plt.subplots(1, len(specs) + bool(traces), figsize=(5.2 * (len(specs) + bool(traces)), 4),
                             squeeze=False)
    for ax, (column, x) in zip(axes[0], specs, strict=False):
        _draw(ax, column, x, frames, targets)
    if traces:
        ax = axes[0][-1]
        for label, trace in traces.items():
            ax.plot(trace["iteration"], trace["prune_ratio"], linewidth=0.5, alpha=0.7, label=label)
        ax.set_xlabel("iteration (mini-batch, all clients)")
        ax.set_ylabel("pruning ratio P_t (first seed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(panel.title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _marked(label: str, by_seed: Mapping[int, Path]) -> str:
    """A curve's legend label, marked when some of its runs are unfinished."""
    return label if all(run_status(d) == "complete" for d in by_seed.values()) else f"{label} (partial)"


def write_figure_report(figure: Figure, runs_root: str | Path, out_dir: str | Path,
                        seeds: Sequence[int], partial: bool = False) -> dict[str, Any]:
    """Aggregate a figure's finished runs into table.md, table.csv, runs.csv and one PNG per panel.

    With ``partial``, unfinished runs are included with the rounds they have so far (the
    table marks them); ``missing`` still lists every run without a summary.json.

    Returns
    -------
    dict
        ``table`` (DataFrame from ``aggregate``), ``markdown`` (str), ``plots`` (list of
        Path), ``missing`` (list of run directories without a complete summary.json).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = collect_runs(figure, runs_root, seeds, partial)
    table = aggregate(runs, figure) if not runs.empty else pd.DataFrame()
    markdown = f"# {figure.title}\n\n{figure.note}\n\n" + (to_markdown(table) if not table.empty else
                                                            "No finished runs.\n")
    (out_dir / "table.md").write_text(markdown)
    table.to_csv(out_dir / "table.csv", index=False)
    runs.drop(columns="targets", errors="ignore").to_csv(out_dir / "runs.csv", index=False)
    plots, missing = [], []
    for panel in figure.panels:
        done = _finished(panel, runs_root, seeds, partial)
        missing += [run_dir_for(runs_root, c, s) for c in panel.curves for s in seeds
                    if run_status(run_dir_for(runs_root, c, s)) != "complete"]
        frames = {_marked(label, by_seed): [read_metrics(d) for d in by_seed.values()]
                  for label, by_seed in done.items() if by_seed}
        traces = {}
        if panel.prune_trace:
            traces = {label: t for label, by_seed in done.items() if by_seed
                      and (t := read_prune_trace(by_seed[min(by_seed)])) is not None}
        if frames:
            plots.append(plot_panel(panel, frames, out_dir / f"fig{figure.id}_{panel.id}.png",
                                    _panel_targets(panel, done), traces))
    return {"table": table, "markdown": markdown, "plots": plots, "missing": missing}
