"""Flower ServerApp: runs the configured split-learning strategy over the SuperNodes.

``flwr run .`` loads ``app`` (see ``[tool.flwr.app.components]``). The run config is the
``ExperimentConfig`` in kebab-case; results go to ``out-dir`` (an absolute path: the app
runs from a copy of the project under FLWR_HOME): metrics.csv, summary.json and
config.toml, the same files as ``acp-flower run``, plus ``failures`` and ``status`` in
summary.json. A run stopped by a failing client (``on-client-error = stop``) or any other
error raises, so Flower marks it ``finished:failed``.
"""

from __future__ import annotations

import logging
import sys
import time

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from acp_flower.apps.executor import Channel, FlowerExecutor, discover_nodes
from acp_flower.apps.ray_tail import RayTails
from acp_flower.config import ExperimentConfig
from acp_flower.data import prepare_data
from acp_flower.metrics import RunRecorder, resume_point
from acp_flower.runtime import RoundOutcome, TailSlots, build_evaluator, check_model, initial_states, resolve_device
from acp_flower.runtime.checkpoint import Checkpoint, remove_checkpoint, save_checkpoint
from strategies import build_strategy

log = logging.getLogger("acp_flower")

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower entry point (thin adapter): run the experiment of ``context.run_config``."""
    run_server(grid, ExperimentConfig.from_run_config(context.run_config))


def run_server(grid: Grid, cfg: ExperimentConfig) -> dict:
    """Run every round of ``cfg`` over ``grid``; write the outputs; return the summary.

    With ``checkpoint`` (or ``resume``), ``out-dir/checkpoint.pt`` is written after every
    round: the strategy's global model, the tails with their optimizers, every client's
    state (sent with its round result), the metrics rows, the faults and this process's
    torch RNG. ``resume`` continues from it: a resumed run is a new simulation, so each
    client gets its state back in a ``query.restore`` message before the first round.
    """
    _setup_logging()
    t0 = time.perf_counter()
    checkpointing = cfg.checkpoint or cfg.resume
    if not cfg.out_dir:
        if checkpointing:
            raise ValueError("config keys 'checkpoint' and 'resume' need an out-dir (where checkpoint.pt lives)")
        log.warning("out-dir is empty: metrics are only logged (pass --run-config \"out-dir='/abs/path'\")")
    cfg.check_flower_app()
    strategy = build_strategy(cfg)  # an unknown scheme fails before anything is written
    check_model(cfg)  # and so does a model or codec that cannot work on this dataset
    ckpt = resume_point(cfg.out_dir or None, cfg, resume=cfg.resume)
    recorder = RunRecorder(cfg.out_dir or None, cfg, overwrite=cfg.resume, resume_rows=ckpt.rows if ckpt else None)
    executor: FlowerExecutor | None = None
    tails = None
    try:
        executor, tails, evaluator = _setup(grid, cfg)
        extra = {"transport": cfg.transport, "setup_s": time.perf_counter() - t0}
        log.info("%d clients ready (transport=%s, %.1fs)", len(executor.client_ids), cfg.transport, extra["setup_s"])
        strategy.initialize(executor, *initial_states(cfg))
        first_round = 1
        if ckpt is not None:
            strategy.load_state_dict(ckpt.strategy)
            tails.load_state_dict(ckpt.tails)
            executor.restore_clients(ckpt.clients, ckpt.server_round)
            executor.faults.restore(ckpt.failures)
            torch.set_rng_state(ckpt.torch_rng)  # last: the setup above drew from it
            first_round = ckpt.server_round + 1
            extra["resumed_after_round"] = ckpt.server_round
            log.info("resuming %s after round %d", cfg.out_dir, ckpt.server_round)

        def on_round_end(outcome: RoundOutcome) -> None:
            recorder.record(outcome)
            if checkpointing:
                save_checkpoint(cfg.out_dir, cfg, Checkpoint(
                    outcome.server_round, recorder.rows, strategy.state_dict(), dict(executor.client_states),
                    tails.state_dict(), torch.get_rng_state(), executor.failures_as_dicts()))

        strategy.start(executor, cfg.rounds, evaluator, on_round_end, first_round=first_round,
                       stop_accuracy=cfg.stop_accuracy)
    except BaseException as exc:
        failures = executor.failures_as_dicts() if executor else []
        stats = executor.stats.as_dict() if executor else {}
        recorder.fail(exc, failures=failures, exchange=stats)  # a checkpoint stays: resume from it
        raise
    finally:
        if isinstance(tails, RayTails):
            tails.close()
    summary = recorder.finish(status="completed", failures=executor.failures_as_dicts(),
                              exchange=executor.stats.as_dict(), **extra)
    if checkpointing:
        remove_checkpoint(cfg.out_dir)
    return summary


def _setup(grid: Grid, cfg: ExperimentConfig):
    """Data and evaluator, the SuperNodes, and the tails of the configured transport.

    The test data is prepared in a thread while the SuperNodes start (Ray, client actors).
    """
    from concurrent.futures import ThreadPoolExecutor

    device = resolve_device(cfg.device)
    with ThreadPoolExecutor(max_workers=1) as pool:
        evaluator = pool.submit(lambda: build_evaluator(cfg, prepare_data(cfg), device))
        nodes, hellos = discover_nodes(Channel(grid), grid, cfg)  # start-up has its own timeout
        if cfg.transport == "ray":
            tails, capacity = RayTails(cfg, grid.run.run_id), client_capacity(hellos.values())
            log.info("tail actor %s on %s; %d client actors at once", tails.name, tails.info["device"], capacity)
        else:
            tails, capacity = TailSlots(cfg, device), 0
        channel = Channel(grid, timeout=cfg.reply_timeout_s)
        return FlowerExecutor(cfg, channel, nodes, tails, capacity), tails, evaluator.result()


def client_capacity(hellos) -> int:
    """How many ClientApps the Ray cluster runs at once (Flower's own pool-size rule)."""
    from flwr.simulation.ray_transport.ray_actor import pool_size_from_resources

    hellos = list(hellos)
    cpus = max(float(h["num-cpus"]) for h in hellos)
    gpus = max(float(h["num-gpus"]) for h in hellos)
    if cpus <= 0:
        return len(hellos)
    return pool_size_from_resources({"num_cpus": cpus, "num_gpus": gpus})


def _setup_logging() -> None:
    """Make the per-round lines of ``RunRecorder`` visible in the run's log."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s acp-flower %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO)
