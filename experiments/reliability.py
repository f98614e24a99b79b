"""Reliability figures: kill/resume of real `flwr run`s, every injected fault, the error catalogue.

    python experiments/reliability.py [--out DIR] [--skip-flwr]

1. Resume: ``acp-flower simulate --checkpoint`` on both transports (synthetic data, 3 clients,
   3 rounds, 10 mini-batches per client per round), every process of the run killed with
   SIGKILL once round 1 is checkpointed (1 s into round 2), then ``--resume``: the rounds
   lost, and whether the whole metrics.csv equals the unbroken run's (the local runner's;
   every column but the wall times, exactly).
2. Faults: each ``fail_kind`` injected into client 1 in round 1 with ``on_client_error =
   skip`` and ``stop`` (local runner; ``hang`` on the flower transport, reply timeout 15 s):
   what the run did and what summary.json lists.
3. Bad inputs: the cases of docs/errors.md (tests/error_cases.py): how many were tried, gave
   their documented error, left files behind.

Prints markdown; the last line is ``figures: ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acp_flower.config import ExperimentConfig  # noqa: E402
from acp_flower.metrics import TIMING_COLUMNS  # noqa: E402
from acp_flower.runners.local import run_experiment  # noqa: E402
from acp_flower.runtime.faults import CORRUPTIONS  # noqa: E402
from tests import error_cases  # noqa: E402
from tests.integration import flwr_runs  # noqa: E402

TINY = dict(dataset="synthetic", train_subset=192, test_subset=64, num_clients=3, rounds=2, batch_size=32,
            eval_batch_size=64, optimizer="adam", lr=1e-3, codec="acp")


def _local(cfg: ExperimentConfig) -> pd.DataFrame:
    return run_experiment(cfg.replace(out_dir="", checkpoint=False, resume=False), None, progress=False)


def resume_figures(root: Path) -> tuple[list[str], bool]:
    lines = ["| transport | scheme | killed processes | checkpoint round at kill | rounds lost | "
             "resumed metrics.csv == unbroken | wall s (killed + resumed) |", "|---|---|---|---|---|---|---|"]
    all_equal = True
    for name in ("resume_ray", "resume_flower"):
        t0 = time.perf_counter()
        r = flwr_runs.run_killed_and_resumed(name, root)
        wall = time.perf_counter() - t0
        run = r.run
        local = _local(run.cfg)
        cols = [c for c in local.columns if c not in TIMING_COLUMNS]
        try:
            pd.testing.assert_frame_equal(run.metrics[cols], local[cols], check_exact=True, check_dtype=False)
            equal = run.returncode == 0
        except AssertionError:
            equal = False
        all_equal &= equal
        # lost: the rounds finished but not in the checkpoint (0 by construction: a row is
        # written, then the checkpoint, before the next round starts) + the round in progress
        lost = r.rows_at_kill - r.checkpoint_round + 1
        lines.append(f"| {run.cfg.transport} | {run.cfg.scheme} | {r.killed} | {r.checkpoint_round} | "
                     f"{lost} (round {r.checkpoint_round + 1}, in progress) | {'yes' if equal else 'NO'} | {wall:.0f} |")
    return lines, all_equal


def fault_figures(root: Path, flwr: bool) -> tuple[list[str], int]:
    lines = ["| fault (client 1, round 1) | driver | skip: clients per round | skip: summary.json failure | "
             "stop: error |", "|---|---|---|---|---|"]
    handled = 0
    for kind in ("raise", *CORRUPTIONS):
        cfg = ExperimentConfig.from_dict({**TINY, "fail_client": 1, "fail_kind": kind})
        out = root / f"fault-{kind}"
        frame = run_experiment(cfg.replace(on_client_error="skip"), out, progress=False)
        fault = json.loads((out / "summary.json").read_text())["failures"][0]
        try:
            run_experiment(cfg.replace(on_client_error="stop"), None, progress=False)
            stop = "NO ERROR"
        except Exception as exc:  # noqa: BLE001
            stop = f"{type(exc).__name__}: {exc}"
        ok = frame["clients"].tolist() == [2, 3] and fault["client_id"] == 1 and stop.startswith("ClientRoundError")
        handled += ok
        lines.append(f"| {kind} | local | {frame['clients'].tolist()} | `{fault['reason']}` | `{stop[:110]}` |")
    if flwr:
        run = flwr_runs.run_simulate("flower_hang_skip", root)
        fault = run.summary["failures"][0] if run.returncode == 0 else {"reason": run.output[-200:]}
        ok = run.returncode == 0 and run.metrics["clients"].tolist() == [2, 3]
        handled += ok
        lines.append(f"| hang (client 0, reply timeout 15 s) | flwr run, flower transport | "
                     f"{run.metrics['clients'].tolist() if ok else '-'} | `{fault['reason']}` | (not run) |")
    return lines, handled


def catalogue_figures(root: Path) -> tuple[list[str], dict[str, int]]:
    documented = error_cases.documented()
    counts = {"tried": 0, "documented_error": 0, "left_files": 0}
    for case in error_cases.cases():
        tmp = root / f"case-{case.id}"
        tmp.mkdir()
        exc, untouched = error_cases.provoke(case, tmp)
        counts["tried"] += 1
        counts["documented_error"] += exc is not None and error_cases.message(exc, tmp) == documented.get(case.id)
        counts["left_files"] += not untouched
    return [f"- tried: {counts['tried']}", f"- gave exactly their documented error: {counts['documented_error']}",
            f"- left files behind (out-dir or data-dir): {counts['left_files']}"], counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-flwr", action="store_true", help="local parts only (no flwr run)")
    args = parser.parse_args(argv)
    # The flwr runs use one torch thread per process (as the integration tests); the local
    # reference must too: float reductions, hence ACP-SL's masks and every later number,
    # depend on the thread count.
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        root = Path(tmp)
        equal = None
        if not args.skip_flwr:
            lines, equal = resume_figures(root / "resume")
            print("## Resume after SIGKILL\n", *lines, "", sep="\n", flush=True)
        (root / "faults").mkdir()
        lines, handled = fault_figures(root / "faults", not args.skip_flwr)
        print("## Injected faults\n", *lines, "", sep="\n", flush=True)
        (root / "cases").mkdir()
        lines, counts = catalogue_figures(root / "cases")
        print("## Bad inputs (docs/errors.md)\n", *lines, "", sep="\n", flush=True)
    print(f"figures: resume_equal={equal} faults_handled={handled} bad_inputs={counts['tried']} "
          f"clear_errors={counts['documented_error']} left_files={counts['left_files']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
