"""Experiment configuration: one frozen dataclass, the single source of truth for every key."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DATASETS = ("cifar10", "fashion-mnist", "mnist", "synthetic")
PARTITIONS = ("iid", "dirichlet", "shard", "pathological")
SCHEMES = ("vanilla", "splitfed_v1", "splitfed_v2")
CODECS = ("standard", "acp", "randtopk", "quantize")
OPTIMIZERS = ("sgd", "adam")
ACP_SCORINGS = ("lcis", "l0", "random")
ACP_RATIOS = ("adaptive", "fixed", "random")
ACP_GROUP_SCORES = ("ratio", "literal")
ACP_SCORE_MIXES = ("combined", "instant", "historical")
ACP_EVAL_MASKS = ("hist", "all")
QUANT_GRANULARITIES = ("tensor", "channel")
TRANSPORTS = ("ray", "flower")
ERROR_POLICIES = ("stop", "skip")
MODELS = ("resnet18",)


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a run. Field names are the config keys (kebab-case in Flower)."""

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
    scheme: str = "vanilla"
    """Training scheme (strategy): vanilla, splitfed_v1, splitfed_v2."""
    local_epochs: int = 1
    """Passes over its partition each client makes per round."""
    # --- model / optimization ---
    model: str = "resnet18"
    """Backbone; split into client head and server tail."""
    cut_layer: int = 4
    """Number of top-level ResNet modules on the client (4 = conv1, bn1, relu, maxpool)."""
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
    # --- codec ---
    codec: str = "acp"
    """Smashed-data codec: standard, acp, randtopk, quantize."""
    acp_scoring: str = "lcis"
    """ACP channel scoring: lcis (paper), l0 (non-zero count), random."""
    acp_ratio: str = "adaptive"
    """ACP pruning ratio: adaptive (eqs 10-13), fixed (p_base), random in [p_min, p_max]."""
    acp_group_score: str = "ratio"
    """Group score of eq. (10): ratio (intra/inter, well defined) or literal (0/0, see docs)."""
    acp_score_mix: str = "combined"
    """Channel score used for pruning: combined (eq. 8), instant (eq. 6), historical (eq. 7)."""
    acp_eval_mask: str = "hist"
    """Channels ACP keeps at inference (no labels): hist (top by S_hist at the last ratio) or all."""
    p_min: float = 0.6
    """Minimum pruning ratio."""
    p_base: float = 0.7
    """Base pruning ratio."""
    p_max: float = 0.8
    """Maximum pruning ratio."""
    randtopk_k: float = 0.3
    """RandTopk: fraction of each sample's elements sent."""
    randtopk_alpha: float = 0.1
    """RandTopk: share of the sent elements drawn at random from the non-top-k ones."""
    quantize_bits: int = 8
    """Quantization bit width (1..16)."""
    quantize_granularity: str = "tensor"
    """Quantization scale per tensor or per channel."""
    # --- drivers (Flower app) ---
    transport: str = "ray"
    """Flower app exchange: ray (tail in a Ray actor) or flower (one message per batch)."""
    tail_num_gpus: float = 0.0
    """GPU fraction the Ray tail actor requests (0 = CPU)."""
    on_client_error: str = "stop"
    """Flower app: a failing client stops the run, or is skipped for that round."""
    out_dir: str = ""
    """Flower app: absolute directory for metrics.csv, summary.json, config.toml."""
    fail_client: int = -1
    """Testing aid: this client id raises during training (-1 = none)."""
    fail_round: int = 1
    """Testing aid: the round in which fail_client raises."""

    def __post_init__(self) -> None:
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("partition", self.partition, PARTITIONS)
        _check_choice("scheme", self.scheme, SCHEMES)
        _check_choice("codec", self.codec, CODECS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("model", self.model, MODELS)
        _check_choice("acp_scoring", self.acp_scoring, ACP_SCORINGS)
        _check_choice("acp_ratio", self.acp_ratio, ACP_RATIOS)
        _check_choice("acp_group_score", self.acp_group_score, ACP_GROUP_SCORES)
        _check_choice("acp_score_mix", self.acp_score_mix, ACP_SCORE_MIXES)
        _check_choice("acp_eval_mask", self.acp_eval_mask, ACP_EVAL_MASKS)
        _check_choice("quantize_granularity", self.quantize_granularity, QUANT_GRANULARITIES)
        _check_choice("transport", self.transport, TRANSPORTS)
        _check_choice("on_client_error", self.on_client_error, ERROR_POLICIES)
        for name in ("rounds", "num_clients", "batch_size", "eval_batch_size", "local_epochs",
                     "shards_per_client", "classes_per_client"):
            _check(name, getattr(self, name) >= 1, "an integer >= 1")
        for name in ("train_subset", "test_subset", "eval_bn_recalibration"):
            _check(name, getattr(self, name) >= 0, "an integer >= 0 (0 = all)")
        for name in ("p_min", "p_base", "p_max"):
            _check(name, 0.0 <= getattr(self, name) < 1.0, "a ratio in [0, 1)")
        if not self.p_min <= self.p_base <= self.p_max:
            raise ValueError(
                f"need p_min <= p_base <= p_max, got p_min={self.p_min}, p_base={self.p_base}, "
                f"p_max={self.p_max}"
            )
        _check("randtopk_k", 0.0 < self.randtopk_k <= 1.0, "a fraction in (0, 1]")
        _check("randtopk_alpha", 0.0 <= self.randtopk_alpha < 1.0, "a fraction in [0, 1)")
        _check("quantize_bits", 1 <= self.quantize_bits <= 16, "an integer in 1..16")
        _check("dirichlet_alpha", self.dirichlet_alpha > 0, "a number > 0")
        _check("lr", self.lr > 0, "a number > 0")
        _check("momentum", 0.0 <= self.momentum < 1.0, "a number in [0, 1)")
        _check("weight_decay", self.weight_decay >= 0, "a number >= 0")
        _check("tail_num_gpus", self.tail_num_gpus >= 0, "a number >= 0")
        _check("cut_layer", 1 <= self.cut_layer <= 9, "an integer in 1..9 (ResNet-18 top-level modules)")
        _check("stop_accuracy", 0.0 <= self.stop_accuracy <= 1.0, "a fraction in [0, 1] (0 = run every round)")
        _check("target_accuracies", all(0 < t <= 1 for t in self.target_accuracies),
               "fractions in (0, 1], e.g. [0.65, 0.75]")
        _check("device", _valid_device(self.device), "'auto', 'cpu', 'cuda' or 'cuda:N'")
        _check("data_dir", bool(self.data_dir) or self.dataset == "synthetic", "a directory path")
        _check("out_dir", not self.out_dir or Path(self.out_dir).is_absolute(),
               "an absolute path (the Flower app runs from a copy of the project)")

    # ----- constructors -----
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Build from snake_case keys; unknown keys raise naming the key."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; known keys: {sorted(known)}")
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
        for item in overrides or []:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ValueError(f"override {item!r} must look like key=value")
            values[key.strip().replace("-", "_")] = _parse_override(raw.strip())
        return cls.from_dict(values)

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
        return ExperimentConfig.from_dict({**self.to_dict(), **changes})


def _check(name: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"config key {name!r}: invalid value; expected {allowed}")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"config key {name!r}: unknown value {value!r}; allowed: {', '.join(allowed)}")


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


DEFAULT_CONFIG = ExperimentConfig()

RESULT_NEUTRAL_KEYS = frozenset({"device", "out_dir", "data_dir", "download"})
"""Keys that say where a run runs and keeps its files, not what it computes."""


def config_diff(saved: dict[str, Any], cfg: ExperimentConfig) -> list[str]:
    """Keys whose value in ``saved`` (a run's config.toml or checkpoint) differs from ``cfg``.

    ``RESULT_NEUTRAL_KEYS`` and unknown keys in ``saved`` are ignored; a key missing from
    ``saved`` counts as its default, so runs saved before a key was added still match.
    """
    defaults, current = DEFAULT_CONFIG.to_dict(), cfg.to_dict()
    return sorted(k for k, v in current.items()
                  if k not in RESULT_NEUTRAL_KEYS and saved.get(k, defaults[k]) != v)
