"""Experiment configuration: one frozen dataclass, the single source of truth for every key.

``ExperimentConfig`` holds the general keys written below and, after them, the options
that every codec, exchange and feature declares in its own file (``acp_flower.options``):
the class is assembled from those declarations when this module is imported, so a new
component's keys appear here, in TOML files, ``--set``, Flower's ``--run-config`` and
the generated ``[tool.flwr.app.config]`` without an edit to this file. The values a
selector key allows (``codec``) are the names in that component's registry.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from acp_flower import codecs, exchanges, link, models  # noqa: F401  imported for their option declarations
from acp_flower.codecs import get_codec, list_codecs
from acp_flower.exchanges import get_exchange, list_exchanges
from acp_flower.models import build_architecture, get_model, list_models
from acp_flower.options import OptionGroup, UnusedOptionWarning, check, check_choice, option_groups
from acp_flower.sampling import resolve_clients_per_round

DATASETS = ("cifar10", "fashion-mnist", "mnist", "synthetic")
PARTITIONS = ("iid", "dirichlet", "shard", "pathological")
OPTIMIZERS = ("sgd", "adam")
TRANSPORTS = ("ray", "flower")
ERROR_POLICIES = ("stop", "skip")
SPLITFED_TAILS = ("fresh", "persistent")
FAULT_KINDS = ("raise", "hang", "nan", "shape", "dtype", "truncate")
SELECTORS: dict[str, Any] = {"codec": list_codecs, "exchange": list_exchanges, "model": list_models}
"""Config keys that select a component, and the registry listing the names they allow."""


@dataclass(frozen=True)
class GeneralConfig:
    """The keys of a run that belong to no single component (see the module docstring)."""

    # --- run ---
    seed: int = 0
    """Seed of model init, partitioning, shuffling, augmentation and codec randomness."""
    rounds: int = 10
    """Number of training rounds."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."""
    target_accuracies: tuple[float, ...] = ()
    """Test accuracies (fractions) for which summary.json reports rounds and bytes to reach."""
    stop_accuracy: float = 0.0
    """End the run after the first round whose test accuracy reaches this fraction (0 = never)."""
    # --- data ---
    dataset: str = "cifar10"
    """One of cifar10, fashion-mnist, mnist, synthetic."""
    data_dir: str = "data"
    """Root of the datasets in torchvision layout."""
    download: bool = True
    """Fetch the dataset into data_dir when it is missing (official source, then mirrors)."""
    augment: bool = False
    """Random crop (padding 4) + horizontal flip of training images."""
    train_subset: int = 0
    """Use a seeded random subset of this many training samples (0 = all)."""
    test_subset: int = 0
    """Evaluate on a seeded random subset of this many test samples (0 = all)."""
    synthetic_train_size: int = 2000
    """dataset='synthetic': training samples generated (the test split stays 500); more than
    2000 for runs with thousands of clients (another size is another draw, not an extension)."""
    partition: str = "iid"
    """How training data is split over clients: iid, dirichlet, shard, pathological."""
    dirichlet_alpha: float = 0.5
    """Concentration of the Dirichlet partition (paper: 0.5); smaller = more skewed."""
    shards_per_client: int = 2
    """Shards per client for the shard partition."""
    classes_per_client: int = 2
    """Classes per client for the pathological partition."""
    # --- federation / scheme ---
    num_clients: int = 5
    """Number of split-learning clients."""
    clients_per_round: int | float = 0
    """Clients that train in a round, drawn anew each round (seeded): an integer count (0 = all,
    in id order), or a float fraction of num_clients in (0, 1]. Vanilla SL visits the sample in
    a seeded order; SplitFed averages over the sample only."""
    scheme: str = "vanilla"
    """Training scheme (strategy): vanilla, splitfed_v1, splitfed_v2."""
    local_epochs: int = 1
    """Passes over its partition each client makes per round."""
    splitfed_tails: str = "fresh"
    """SplitFed-v1's server-side tail copies. 'fresh': each round every sampled client trains
    against a new copy of the global tail with a new optimizer state; copies exist only while
    their group (splitfed_group_size) trains, then are averaged in and freed. 'persistent': one
    tail copy and optimizer per slot (position in the round's sample), kept for the whole run
    (the behaviour before fresh tails; memory grows with the sample size)."""
    splitfed_group_size: int = 8
    """SplitFed-v1 with fresh tails: clients that train at once, each against its own tail copy
    (the peak number of tail copies). Results do not depend on it."""
    batch_clients: bool = False
    """SplitFed-v1, local runner: run each group's clients (splitfed_group_size) as one batched
    step (torch.func.vmap over stacked heads and tail copies; each client keeps its own weights,
    optimizers and codec state). Equal to one-by-one execution within float tolerance, not bit
    for bit, hence off by default; on a CPU it is slower (docs/codecs.md, batched clients)."""
    # --- model / optimization ---
    model: str = "resnet18"
    """Backbone, split into client head and server tail: resnet18 or vit_tiny (its options:
    acp_flower/models/<name>.py)."""
    cut_layer: int = 4
    """Where the model is cut: resnet18, top-level modules on the client (4 = conv1, bn1, relu,
    maxpool; 1..9); vit_tiny, transformer blocks on the client (1..vit_depth - 1)."""
    batch_size: int = 128
    """Training mini-batch size."""
    eval_batch_size: int = 512
    """Test-time batch size."""
    eval_bn_recalibration: int = 0
    """Before each evaluation, re-estimate the tail's BatchNorm statistics on this many
    un-augmented training samples sent through the codec's inference path (0 = off).
    Training is unaffected; see docs/codecs.md (ACP-SL's inference mask)."""
    optimizer: str = "sgd"
    """sgd or adam, used for both head and tail."""
    lr: float = 0.00015
    """Learning rate of head and tail optimizers."""
    momentum: float = 0.0
    """SGD momentum."""
    weight_decay: float = 0.0
    """L2 weight decay."""
    # --- exchange and codec (their options are declared in acp_flower/{exchanges,codecs}/<name>.py) ---
    exchange: str = "backprop"
    """What one mini-batch exchange does: backprop (gradient back) or decoupled (auxiliary loss)."""
    codec: str = "acp"
    """Smashed-data codec: one of the registered codecs (standard, acp, randtopk, quantize, ...)."""
    # --- drivers (Flower app) ---
    transport: str = "ray"
    """Flower app exchange: ray (tail in a Ray actor) or flower (one message per batch)."""
    tail_num_gpus: float = 0.0
    """GPU fraction the Ray tail actor requests (0 = CPU)."""
    on_client_error: str = "stop"
    """A client that fails a round (raises, diverges: NaN/inf in a loss, the smashed data or a
    gradient; sends a malformed payload) stops the run ("stop"), or is skipped for that round
    ("skip": back to its round-start state, the fault listed in summary.json). Every driver."""
    out_dir: str = ""
    """Flower app: absolute directory for metrics.csv, summary.json, config.toml."""
    checkpoint: bool = False
    """Flower app: write out_dir/checkpoint.pt after every round (the state of the ServerApp and
    of every client; removed when the run completes). The local runner: ``--checkpoint``."""
    resume: bool = False
    """Flower app: continue the run in out_dir from its checkpoint.pt (and keep checkpointing);
    without one, start over unless out_dir holds a completed run. ``acp-flower simulate --resume``."""
    reply_timeout_s: float = 21600.0
    """Flower app: how long the ServerApp waits for a client's reply (a mini-batch on the
    flower transport, a whole client round on ray) before it counts as failed (no reply)."""
    fail_client: int = -1
    """Testing aid: this client id fails in fail_round (-1 = none); how: fail_kind."""
    fail_round: int = 1
    """Testing aid: the round in which fail_client fails."""
    fail_kind: str = "raise"
    """Testing aid: raise (an exception at the round's start), hang (sleeps past
    reply_timeout_s; Flower app only), or a corrupted first upload of the round: nan (NaN
    values), shape (a wrong smashed-data shape), dtype (an invalid label dtype code),
    truncate (half the bytes)."""

    _groups: ClassVar[tuple[OptionGroup, ...]] = ()
    """The option groups collected into the class (set on ``ExperimentConfig``)."""

    def __post_init__(self) -> None:
        self._check_general()
        self._check_options()

    def _check_general(self) -> None:
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("partition", self.partition, PARTITIONS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("transport", self.transport, TRANSPORTS)
        _check_choice("on_client_error", self.on_client_error, ERROR_POLICIES)
        _check_choice("splitfed_tails", self.splitfed_tails, SPLITFED_TAILS)
        _check_choice("fail_kind", self.fail_kind, FAULT_KINDS)
        _check("reply_timeout_s", self.reply_timeout_s > 0, "a number of seconds > 0")
        for key, registry in SELECTORS.items():
            _check_choice(key, getattr(self, key), registry())
        for name in ("rounds", "num_clients", "batch_size", "eval_batch_size", "local_epochs", "splitfed_group_size",
                     "synthetic_train_size",
                     "shards_per_client", "classes_per_client"):
            _check(name, getattr(self, name) >= 1, "an integer >= 1")
        for name in ("train_subset", "test_subset", "eval_bn_recalibration"):
            _check(name, getattr(self, name) >= 0, "an integer >= 0 (0 = all)")
        resolve_clients_per_round(self.clients_per_round, self.num_clients)
        _check("dirichlet_alpha", self.dirichlet_alpha > 0, "a number > 0")
        _check("lr", self.lr > 0, "a number > 0")
        _check("momentum", 0.0 <= self.momentum < 1.0, "a number in [0, 1)")
        _check("weight_decay", self.weight_decay >= 0, "a number >= 0")
        _check("tail_num_gpus", self.tail_num_gpus >= 0, "a number >= 0")
        _check("stop_accuracy", 0.0 <= self.stop_accuracy <= 1.0, "a fraction in [0, 1] (0 = run every round)")
        _check("target_accuracies", all(0 < t <= 1 for t in self.target_accuracies),
               "fractions in (0, 1], e.g. [0.65, 0.75]")
        _check("device", _valid_device(self.device), "'auto', 'cpu', 'cuda' or 'cuda:N'")
        _check("data_dir", bool(self.data_dir) or self.dataset == "synthetic", "a directory path")
        if self.batch_clients:
            self._check_batch_clients()
        _check("out_dir", not self.out_dir or Path(self.out_dir).is_absolute(),
               "an absolute path (the Flower app runs from a copy of the project)")

    def _check_batch_clients(self) -> None:
        """What ``batch_clients`` needs: clients that train at once against their own tails, an
        exchange that can run them together, and nothing that changes one client mid-group."""
        needs = [(self.scheme == "splitfed_v1", f"scheme = 'splitfed_v1' (scheme = {self.scheme!r} trains its clients "
                                                 "one after another against one tail)"),
                 (get_exchange(self.exchange).batchable(), f"an exchange that can batch (exchange = {self.exchange!r} "
                                                           "cannot; 'backprop' can)"),
                 (self.on_client_error == "stop", "on_client_error = 'stop' (a skipped client would leave its "
                                                  "group mid-step)"),
                 (self.fail_client < 0, "no fault injection (fail_client = -1)"),
                 (getattr(self, "head_prune_sparsity", 0.0) == 0.0, "no client-side head pruning "
                                                                     "(head_prune_sparsity = 0)")]
        for ok, need in needs:
            _check("batch_clients", ok, f"false, or true with {need}")

    def check_flower_app(self) -> None:
        """Refuse what only the local runner can do (the launcher and the ServerApp call this
        before any start-up): in ``flwr run`` every client is a SuperNode of its own."""
        _check("batch_clients", not self.batch_clients,
               "false under flwr run / acp-flower simulate (each client runs in its own ClientApp, so clients "
               "cannot share a batched step; batching is the local runner's: acp-flower run, run_experiment)")

    def _check_options(self) -> None:
        """Validate every group (its ``__post_init__``) and the model's cut; warn about set options
        that have no effect."""
        for group in self._groups:
            group.cls(**{key: getattr(self, key) for key in group.keys})
        build_architecture(self).check_cut(self.cut_layer)
        if get_codec(self.codec).needs_attention and not get_model(self.model).provides_attention:
            with_attention = [m for m in list_models() if get_model(m).provides_attention]
            raise ValueError(f"config key 'codec': {self.codec!r} needs a model with attention, and model = "
                             f"{self.model!r} has none; use model = one of {', '.join(with_attention)}")
        for group in self._groups:
            if group.kind and getattr(self, group.kind) != group.name:
                unused = [f"{f.name} = {getattr(self, f.name)!r}" for f in fields(group.cls)
                          if getattr(self, f.name) != f.default]
                if unused:
                    warnings.warn(
                        f"config key(s) {', '.join(unused)} belong to {group.label()} but {group.kind} = "
                        f"{getattr(self, group.kind)!r}: they have no effect", UnusedOptionWarning, stacklevel=4)

    def options(self, kind: str) -> Any:
        """The options of the component selected by key ``kind`` (e.g. "codec"), or of feature ``kind``.

        None when that component declares no options.
        """
        for group in self._groups:
            if (group.kind == kind and getattr(self, kind) == group.name) or (not group.kind and group.name == kind):
                return group.cls(**{key: getattr(self, key) for key in group.keys})
        if not any(g.kind == kind for g in self._groups) and kind not in SELECTORS:
            raise KeyError(f"no component kind or feature named {kind!r}")
        return None

    # ----- constructors -----
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Build from snake_case keys; unknown keys raise naming the key."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            close = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
            hints = "".join(f"; did you mean {m[0]!r} for {k!r}?" for k, m in close.items() if m)
            raise ValueError(f"unknown config key(s) {unknown}{hints} (every key, with its default: "
                             "the [tool.flwr.app.config] section of pyproject.toml)")
        return cls(**{k: _coerce(k, v, known[k].type) for k, v in values.items()})

    @classmethod
    def from_toml(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
        """Read a flat TOML file (may be None) and apply ``key=value`` overrides (TOML values)."""
        values: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"config file {path} does not exist")
            with path.open("rb") as fh:
                try:
                    values = tomllib.load(fh)
                except tomllib.TOMLDecodeError as exc:
                    raise ValueError(f"config file {path} is not valid TOML: {exc}") from exc
        return cls.from_dict({**values, **parse_overrides(overrides or [])})

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> ExperimentConfig:
        """Build from a Flower run config (kebab-case keys, one per field)."""
        return cls.from_dict({k.replace("-", "_"): v for k, v in run_config.items()})

    def to_dict(self) -> dict[str, Any]:
        """snake_case dict; tuples become lists (TOML-friendly)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def to_run_config(self) -> dict[str, Any]:
        """kebab-case dict with Flower-compatible scalar values (lists joined by commas)."""
        out = {}
        for k, v in self.to_dict().items():
            out[k.replace("_", "-")] = ",".join(str(x) for x in v) if isinstance(v, list) else v
        return out

    def to_toml(self) -> str:
        """The resolved config as TOML text (round-trips through ``from_toml``)."""
        return "".join(f"{k} = {_toml_value(v)}\n" for k, v in self.to_dict().items())

    def replace(self, **changes: Any) -> ExperimentConfig:
        """Copy with some fields changed (validated)."""
        return type(self).from_dict({**self.to_dict(), **changes})


_check, _check_choice = check, check_choice


def _valid_device(device: str) -> bool:
    if device in ("auto", "cpu", "cuda"):
        return True
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def _coerce(key: str, value: Any, type_name: Any) -> Any:
    """Check and convert a raw value to the field's type, naming the key on failure."""
    type_name = str(type_name)
    try:
        if type_name.startswith("tuple"):
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            return tuple(float(v) for v in value)
        if type_name == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise TypeError
            return value
        if type_name == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if type_name == "int | float":  # a count or a fraction: the value's own type says which
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError
            return value
        if type_name == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if type_name == "str":
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        raise ValueError(f"config key {key!r}: expected {type_name}, got {value!r}") from None
    raise AssertionError(f"unhandled field type {type_name} for {key}")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` (values in TOML syntax, bare words as strings) as snake_case keys -> values."""
    values = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value")
        values[key.strip().replace("-", "_")] = _parse_override(raw.strip())
    return values


def _parse_override(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # bare words such as codec=acp


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _assemble() -> type[GeneralConfig]:
    """``GeneralConfig`` plus one field per declared option, as one frozen dataclass."""
    groups = option_groups()
    general = {f.name for f in fields(GeneralConfig)}
    extra = []
    for group in groups:
        for f in fields(group.cls):
            if f.name in general:
                raise ValueError(f"config key {f.name!r} of {group.label()} is a general config key")
            extra.append((f.name, f.type, dataclasses.field(default=f.default)))
    cls = dataclasses.make_dataclass(
        "ExperimentConfig", extra, bases=(GeneralConfig,), frozen=True,
        namespace={"_groups": groups, "__doc__": "Everything that defines a run: the general keys of "
                   "``GeneralConfig`` and every component's options. Field names are the config keys "
                   "(kebab-case in Flower)."},
    )
    cls.__module__ = __name__  # so that pickle (Ray, torch.save) finds it here
    return cls


ExperimentConfig = _assemble()

DEFAULT_CONFIG = ExperimentConfig()

RESULT_NEUTRAL_KEYS = frozenset({"device", "out_dir", "data_dir", "download", "checkpoint", "resume"})
"""Keys that say where a run runs and keeps its files, not what it computes."""


def config_diff(saved: dict[str, Any], cfg: ExperimentConfig) -> list[str]:
    """Keys whose value in ``saved`` (a run's config.toml or checkpoint) differs from ``cfg``.

    ``RESULT_NEUTRAL_KEYS`` and unknown keys in ``saved`` are ignored; a key missing from
    ``saved`` counts as its default, so runs saved before a key was added still match.
    """
    defaults, current = DEFAULT_CONFIG.to_dict(), cfg.to_dict()
    return sorted(k for k, v in current.items()
                  if k not in RESULT_NEUTRAL_KEYS and saved.get(k, defaults[k]) != v)
