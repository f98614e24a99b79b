"""``acp-flower simulate``: run the Flower app with ``flwr run .`` and check that it completed.

``flwr run`` exits 0 even when the run fails, and leaves the local SuperLink it starts
running. This wrapper:

1. prepares the environment: an isolated ``FLWR_HOME`` (a temporary directory unless set),
   ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` (no ``uv sync`` of the app's
   dependencies from the registry), telemetry and update checks off, and
   ``RAY_worker_niceness=0`` (Ray's default 15 deprioritises every actor) and
   ``RAY_max_direct_call_object_size=4 MiB`` (payloads inline in Ray calls);
2. starts its own SuperLink (simulation mode, as ``flwr`` itself would) on a free port,
   which ``flwr run`` then finds through ``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``, so
   concurrent launches never share one;
3. submits the run (``--run-config`` written to a TOML file, ``--federation-config`` checked
   here; ``num-supernodes`` defaults to ``num-clients``; a relative ``data-dir`` / ``out-dir``
   is made absolute, as the app runs from a copy of the project under FLWR_HOME);
4. streams the run's log, waits until ``flwr ls --run-id ID --format json`` reports it
   finished, stops the SuperLink by its PID and exits non-zero unless the status is
   ``finished:completed``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from acp_flower.config import ExperimentConfig
from acp_flower.runtime import check_model
from strategies import get_strategy

APP_DIR = Path(__file__).resolve().parents[2]
"""The Flower app's project directory (where pyproject.toml is)."""
ENV_DEFAULTS = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    # Ray starts its workers (client actors, the tail actor) at niceness 15, below the
    # ServerApp process and anything else on the machine; run them like a plain process.
    "RAY_worker_niceness": "0",
    # Pass task arguments and results up to 4 MiB inline instead of through Ray's object
    # store: a 0.6 MB smashed-data payload then costs ~3.5 ms per tail call instead of ~8.
    "RAY_max_direct_call_object_size": str(4 * 1024 * 1024),
}
FEDERATION_KEYS: dict[str, type] = {
    "num-supernodes": int, "client-resources-num-cpus": int, "client-resources-num-gpus": float,
    "backend": str, "verbose": bool, "init-args-num-cpus": int, "init-args-num-gpus": int,
    "init-args-logging-level": str, "init-args-log-to-driver": bool,
}
"""``--federation-config`` keys of Flower 1.41 (proto ``SimulationConfig``) and their types."""


@dataclass
class SimulationOutcome:
    """How a launched run ended."""

    run_id: int
    status: str
    """Flower's status text, e.g. ``finished:completed`` or ``finished:failed``."""
    details: str
    wall_s: float
    out_dir: str

    @property
    def ok(self) -> bool:
        return self.status == "finished:completed"


def parse_federation_config(items: list[str] | None) -> dict[str, Any]:
    """Parse ``k=v`` items (Flower's syntax) and check keys and types, e.g. fractional GPUs.

    ``client-resources-num-cpus`` must be an integer (Flower's proto field is int), while
    ``client-resources-num-gpus`` is a fraction of a GPU (``0.25``: four clients per GPU).
    """
    values = _parse_items(items, "--federation-config")
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in FEDERATION_KEYS:
            raise ValueError(f"unknown --federation-config key {key!r}; known: {', '.join(FEDERATION_KEYS)}")
        out[key] = _check_type(key, value, FEDERATION_KEYS[key])
    for key in ("num-supernodes", "client-resources-num-cpus", "init-args-num-cpus"):
        if key in out and out[key] < 1:
            raise ValueError(f"--federation-config {key} must be >= 1, got {out[key]}")
    for key in ("client-resources-num-gpus", "init-args-num-gpus"):
        if key in out and out[key] < 0:
            raise ValueError(f"--federation-config {key} must be >= 0, got {out[key]}")
    return out


def _parse_items(items: list[str] | None, option: str) -> dict[str, Any]:
    """``k=v`` items parsed exactly as ``flwr run`` parses them (errors as ValueError).

    Flower silently drops a token without ``=``; here it is an error naming the token.
    """
    import shlex

    import click
    from flwr.common.config import parse_config_args

    for item in items or []:
        if item.endswith(".toml") and Path(item).is_file():
            continue
        bad = [token for token in shlex.split(item) if "=" not in token]
        if bad:
            raise ValueError(f"{option}: {bad[0]!r} must look like key=value")
    try:
        return parse_config_args(items or [])
    except click.ClickException as exc:
        raise ValueError(f"{option}: {exc.message}") from None


def _check_type(key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"--federation-config {key} must be {kind.__name__}, got {value!r}")
    return value


def format_federation_config(values: dict[str, Any]) -> str:
    """The ``--federation-config`` string of ``values``."""
    def fmt(v: Any) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else json.dumps(v) if isinstance(v, str) else repr(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in values.items())


def resolve_run_config(items: list[str] | None, cwd: Path | None = None) -> dict[str, Any]:
    """Parse ``--run-config`` items (or one TOML file), validate them against ``ExperimentConfig``
    and make ``data-dir`` / ``out-dir`` absolute (relative to ``cwd``)."""
    cwd = cwd or Path.cwd()
    values = _parse_items(items, "--run-config")
    defaults = ExperimentConfig().to_run_config()
    values["data-dir"] = str((cwd / str(values.get("data-dir", defaults["data-dir"]))).resolve())
    if values.get("out-dir"):
        values["out-dir"] = str((cwd / str(values["out-dir"])).resolve())
    cfg = ExperimentConfig.from_run_config({**defaults, **values})  # unknown keys, bad values: ValueError
    cfg.check_flower_app()
    get_strategy(cfg.scheme)  # an unknown scheme too, before a SuperLink starts
    check_model(cfg)  # and a model or codec that cannot work on the dataset
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flwr_env(flwr_home: Path, ray_tmpdir: Path | None = None) -> dict[str, str]:
    """The environment of the SuperLink and the ``flwr`` commands.

    ``ray_tmpdir`` (``RAY_TMPDIR``) gives the run's Ray a private temp directory: Ray's
    ``init()`` otherwise connects to whatever cluster ``/tmp/ray/ray_current_cluster``
    names (the last ``ray start`` on the machine, even a dead one). Attaching to a cluster
    on purpose goes through ``RAY_ADDRESS`` (see docs/flower.md).
    """
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in ENV_DEFAULTS.items()}}
    env["FLWR_HOME"] = str(flwr_home)
    if ray_tmpdir is not None:
        env["RAY_TMPDIR"] = str(ray_tmpdir)
    env.setdefault("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", str(free_port()))  # Runtime + Control API
    bin_dir = str(Path(sys.executable).parent)  # flower-superlink, flwr-simulation, flwr
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


class LocalSuperLink:
    """A simulation SuperLink started (and stopped, by PID) by this process."""

    def __init__(self, env: dict[str, str], startup_timeout: float = 60.0) -> None:
        self.env, self.timeout = env, startup_timeout
        self.port = env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"]
        self.home = Path(env["FLWR_HOME"])
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> LocalSuperLink:
        runtime = self.home / "local-superlink"
        runtime.mkdir(parents=True, exist_ok=True)
        command = [
            "flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess",
            "--host", "127.0.0.1", "--port", self.port, "--database", str(runtime / "state.db"),
        ]
        with (runtime / "superlink.out").open("ab") as out:
            self.process = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"flower-superlink exited with code {self.process.returncode}; "
                                   f"see {self.home / 'local-superlink' / 'superlink.out'}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=0.5).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"flower-superlink did not become healthy within {self.timeout:.0f}s")

    def stop(self) -> None:
        """SIGTERM the SuperLink by its PID; then end, each by its PID, what it started and
        left behind (SuperExec, simulation process, Ray: they normally exit with it; a
        simulation stuck e.g. in ``ray.init`` ignores SIGTERM, and so does its SuperLink)."""
        if self.process is None:
            return
        tree = descendants(self.process.pid)
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
        deadline = time.monotonic() + 15
        while _alive(tree) and time.monotonic() < deadline:
            time.sleep(0.3)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _alive(tree):
                _signal(pid, sig)
            if _alive(tree):
                time.sleep(2.0)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, ... (None if gone)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """PIDs of all live descendants of ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _proc_stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pids: list[int]) -> list[int]:
    return [p for p in pids if (fields := _proc_stat(p)) is not None and fields[0] != "Z"]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _flwr(args: list[str], env: dict[str, str], app_dir: Path, timeout: float = 300) -> str:
    proc = subprocess.run(["flwr", *args], env=env, cwd=app_dir, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        output = proc.stderr.strip() or proc.stdout.strip()
        raise RuntimeError(f"`flwr {' '.join(args)}` failed ({proc.returncode}): {output}")
    return proc.stdout


def _json_tail(text: str) -> dict:
    """The JSON object printed by a ``flwr ... --format json`` command."""
    return json.loads(text[text.index("{"):])


def run_status(run_id: int, env: dict[str, str], app_dir: Path) -> tuple[str, str]:
    """(status, status details) of a run from ``flwr ls --run-id ID --format json``."""
    runs = _json_tail(_flwr(["ls", "--run-id", str(run_id), "--format", "json"], env, app_dir))["runs"]
    return str(runs[0]["status"]), str(runs[0].get("status-details", ""))


def simulate(run_config: list[str] | None = None, federation_config: list[str] | None = None, *,
             app_dir: Path = APP_DIR, flwr_home: str | Path | None = None, stream: bool = True,
             timeout: float = 24 * 3600.0, checkpoint: bool = False, resume: bool = False) -> SimulationOutcome:
    """Run the app once through a SuperLink of its own; see the module docstring.

    ``checkpoint`` / ``resume`` set the run-config keys of the same names (the ServerApp
    checkpoints after every round / continues the run in out-dir from its checkpoint).
    """
    from acp_flower.metrics import resume_point

    values = resolve_run_config(run_config)
    if checkpoint:
        values["checkpoint"] = True
    if resume:
        values["resume"] = True
    cfg = ExperimentConfig.from_run_config({**ExperimentConfig().to_run_config(), **values})
    if (cfg.checkpoint or cfg.resume) and not cfg.out_dir:
        raise ValueError("--checkpoint / --resume need an out-dir in --run-config (where checkpoint.pt lives)")
    resume_point(cfg.out_dir or None, cfg, resume=cfg.resume)  # fail now, not after the start-up
    federation = parse_federation_config(federation_config)
    federation.setdefault("num-supernodes", cfg.num_clients)
    if federation["num-supernodes"] != cfg.num_clients:  # one SuperNode per client; fail before any start-up
        raise ValueError(f"--federation-config num-supernodes={federation['num-supernodes']} but run config "
                         f"num-clients={cfg.num_clients}: each SuperNode is one client (one partition), so they "
                         "must be equal; to train fewer clients per round set clients-per-round")
    home = Path(flwr_home or os.environ.get("FLWR_HOME") or tempfile.mkdtemp(prefix="acp-flwr-home-"))
    temporary = not (flwr_home or os.environ.get("FLWR_HOME"))
    # short path: Ray's unix sockets live below it (at most 107 characters)
    ray_tmp = None if os.environ.get("RAY_ADDRESS") else Path(tempfile.mkdtemp(prefix="acp-ray-", dir="/tmp"))
    env = flwr_env(home, ray_tmp)
    overrides = home / "acp-run-config.toml"
    overrides.parent.mkdir(parents=True, exist_ok=True)
    overrides.write_text(tomli_w.dumps(values))
    t0 = time.perf_counter()
    try:
        with LocalSuperLink(env):
            started = _json_tail(_flwr(["run", str(app_dir), "--run-config", str(overrides), "--federation-config",
                                        format_federation_config(federation), "--format", "json"], env, app_dir))
            if "run-id" not in started:  # flwr refused the run: say why, not KeyError
                raise RuntimeError(f"flwr run did not start the run: {started.get('error-message', started)}")
            run_id = int(started["run-id"])
            status, details = _wait_finished(run_id, env, app_dir, stream, timeout)
    finally:
        if temporary:
            shutil.rmtree(home, ignore_errors=True)
        if ray_tmp is not None:
            shutil.rmtree(ray_tmp, ignore_errors=True)
    return SimulationOutcome(run_id, status, details, time.perf_counter() - t0, str(values.get("out-dir", "")))


def _wait_finished(run_id: int, env: dict[str, str], app_dir: Path, stream: bool, timeout: float) -> tuple[str, str]:
    """Wait for the run to finish: its log stream (``flwr log ID --stream``, shown unless
    ``stream`` is False) ends with the run; then confirm with ``flwr ls`` (polling, rarely,
    should the stream have ended early)."""
    out = None if stream else subprocess.DEVNULL
    streamer = subprocess.Popen(["flwr", "log", str(run_id), "--stream"], env=env, cwd=app_dir,
                                stdout=out, stderr=out)
    deadline = time.monotonic() + timeout
    try:
        while streamer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        while True:
            status, details = run_status(run_id, env, app_dir)
            if status.startswith("finished"):
                return status, details
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} not finished after {timeout:.0f}s (status {status})")
            time.sleep(5.0)
    finally:
        _stop_child(streamer)


def _stop_child(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def register_cli(subparsers) -> None:
    """Add ``acp-flower simulate`` to the CLI's subparsers (called by acp_flower.cli)."""
    cmd = subparsers.add_parser("simulate", help="run the Flower app (flwr run .) and check that it completed")
    cmd.add_argument("--run-config", action="append", metavar="'K=V ...'",
                     help="run-config overrides, Flower syntax (repeatable), or one TOML file; "
                          "e.g. \"dataset='synthetic' rounds=2 out-dir='runs/x'\"")
    cmd.add_argument("--federation-config", action="append", metavar="'K=V ...'",
                     help="e.g. 'num-supernodes=5 client-resources-num-cpus=1 client-resources-num-gpus=0.25' "
                          "(num-supernodes defaults to num-clients)")
    cmd.add_argument("--flwr-home", help="FLWR_HOME to use (default: $FLWR_HOME or a temporary directory)")
    cmd.add_argument("--quiet", action="store_true", help="do not stream the run's log")
    cmd.add_argument("--checkpoint", action="store_true",
                     help="write out-dir/checkpoint.pt after every round (removed when the run completes)")
    cmd.add_argument("--resume", action="store_true",
                     help="continue the run in out-dir from its checkpoint.pt (implies --checkpoint)")
    cmd.add_argument("--timeout", type=float, default=24 * 3600.0,
                     help="seconds after which the run counts as failed (default 24 h)")
    cmd.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args) -> int:
    # SIGTERM unwinds like an error, so the SuperLink this process started is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        outcome = simulate(args.run_config, args.federation_config, flwr_home=args.flwr_home,
                           stream=not args.quiet, timeout=args.timeout, checkpoint=args.checkpoint,
                           resume=args.resume)
    except (RuntimeError, TimeoutError) as exc:
        print(f"acp-flower: error: {exc}", file=sys.stderr)
        return 1
    if outcome.ok:
        where = outcome.out_dir or "(no out-dir)"
        print(f"run {outcome.run_id} {outcome.status} in {outcome.wall_s:.1f}s; results in {where}")
        return 0
    print(f"acp-flower: run {outcome.run_id} {outcome.status}: {outcome.details}", file=sys.stderr)
    return 1
