"""The bad inputs of docs/errors.md: each case sets up its inputs in a temporary directory and
provokes one error the way a user would (config keys, ``--set`` / ``--run-config``, dataset
files, out-dir, checkpoints, the federation, wire payloads).

``python -m tests.error_cases`` runs every case and writes docs/errors.md with the exact
error text each produces (paths shown relative to the case's directory, as ``<tmp>``);
tests/test_errors.py checks that every case still produces exactly that text, and that it
left no file behind.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "errors.md"
TINY = dict(dataset="synthetic", train_subset=128, test_subset=64, num_clients=2, rounds=1, batch_size=32,
            eval_batch_size=64, optimizer="adam", lr=1e-3, codec="standard")


@dataclass(frozen=True)
class Case:
    id: str
    area: str
    title: str
    how: str
    """What the user typed or did (shown in the catalogue)."""
    provoke: Callable[[Path], object]
    setup: Callable[[Path], None] | None = None
    """Creates the case's inputs (a dataset, an out-dir) before the snapshot of files is taken."""


# ----------------------------------------------------------------------------- helpers
def _cfg(**changes):
    from acp_flower.config import ExperimentConfig

    return ExperimentConfig.from_dict({**TINY, **changes})


def _run(tmp: Path, **changes):
    """The local runner with ``changes``, writing to tmp/out (must stay unwritten)."""
    from acp_flower.runners.local import run_experiment

    return run_experiment(_cfg(**changes), tmp / "out", progress=False)


def _cli(*argv: str):
    """``acp-flower run ...``: the CLI turns a bad input into exit code 2; re-raise it here."""
    from acp_flower.cli import build_parser

    args = build_parser().parse_args(["run", *argv])
    return args.func(args)


def _idx(path: Path, magic: int, dims: tuple[int, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + bytes(math.prod(dims)))


def _fmnist(tmp: Path, n: int = 10) -> Path:
    """A well-formed (all-zero) Fashion-MNIST copy of n images per split under tmp/data."""
    raw = tmp / "data" / "FashionMNIST" / "raw"
    for prefix in ("train", "t10k"):
        _idx(raw / f"{prefix}-images-idx3-ubyte", 0x803, (n, 28, 28))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", 0x801, (n,))
    return raw


def _load_fmnist(tmp: Path):
    return _run(tmp, dataset="fashion-mnist", data_dir=str(tmp / "data"), download=False, train_subset=0,
                test_subset=0, num_clients=2)


def _finished_run(tmp: Path) -> None:
    _run(tmp)


def _checkpointed(tmp: Path) -> None:
    from acp_flower.runners.local import run_experiment
    from acp_flower.runtime import ClientRoundError

    try:
        run_experiment(_cfg(rounds=2, fail_client=0, fail_round=2), tmp / "out", progress=False, checkpoint=True)
    except ClientRoundError:
        pass


def _resume(tmp: Path, **changes):
    from acp_flower.runners.local import run_experiment

    cfg = _cfg(**{"rounds": 2, "fail_client": 0, "fail_round": 2, **changes})
    return run_experiment(cfg, tmp / "out", progress=False, resume=True)


def _payload(**kw):
    import torch

    from acp_flower.wire import Payload

    shape = kw.pop("shape", (2, 64, 8, 8))
    return Payload(shape, torch.zeros(math.prod(shape)), labels=torch.tensor([1, 2]), **kw)


def _bytes(**kw) -> bytes:
    from acp_flower.wire import to_bytes

    return to_bytes(_payload(**kw))


def _decode(data: bytes):
    from acp_flower.wire import from_bytes

    return from_bytes(data)


def _server_step(data: bytes):
    import torch

    from acp_flower.runtime import build_server

    return build_server(_cfg(), torch.device("cpu")).step(data)


VALUES = 2 * 64 * 8 * 8
"""Float values of ``_payload()`` (the last 4 x VALUES bytes of its serialization)."""


def _nan_bytes() -> bytes:
    return _bytes()[: -4 * VALUES] + np.full(VALUES, np.nan, "<f4").tobytes()


def _loopback_federation(tmp: Path):
    from acp_flower.apps.server_app import run_server
    from tests.integration.loopback import LoopbackGrid

    cfg = _cfg(num_clients=3, transport="flower")
    grid = LoopbackGrid(cfg)
    grid.node_ids = grid.node_ids[:2]
    try:
        return run_server(grid, cfg)
    finally:
        grid.close()


def _federation(*items: str):
    from acp_flower.apps.launch import parse_federation_config

    return parse_federation_config(list(items))


def _overrides(*items: str):
    from acp_flower.config import ExperimentConfig, parse_overrides

    return ExperimentConfig.from_dict({**TINY, **parse_overrides(list(items))})


def _run_config(*items: str):
    from acp_flower.apps.launch import resolve_run_config

    return resolve_run_config(list(items))


def _simulate(tmp: Path, run_config: list[str], federation_config: list[str]):
    from acp_flower.apps.launch import simulate

    return simulate(run_config, federation_config, flwr_home=tmp / "flwr-home", stream=False)


def _toml(tmp: Path):
    from acp_flower.config import ExperimentConfig

    return ExperimentConfig.from_toml(tmp / "my-run.toml")


# ----------------------------------------------------------------------------- the cases
CONFIG = [
    ("an unknown config key", "--set roundz=2", lambda t: _cli("--set", "roundz=2", "--out", str(t / "out"))),
    ("an unknown dataset", "dataset = 'imagenet'", lambda t: _cfg(dataset="imagenet")),
    ("an unknown codec", "codec = 'gzip'", lambda t: _cfg(codec="gzip")),
    ("an unknown exchange", "exchange = 'async'", lambda t: _cfg(exchange="async")),
    ("an unknown scheme", "scheme = 'fedprox'", lambda t: _run(t, scheme="fedprox")),
    ("zero rounds", "rounds = 0", lambda t: _cfg(rounds=0)),
    ("a non-positive learning rate", "lr = -0.1", lambda t: _cfg(lr=-0.1)),
    ("a cut beyond ResNet-18", "cut_layer = 12", lambda t: _cfg(cut_layer=12)),
    ("an unknown model", "model = 'vgg16'", lambda t: _cfg(model="vgg16")),
    ("a cut beyond the ViT's depth", "model = 'vit_tiny', vit_depth = 6, cut_layer = 6",
     lambda t: _cfg(model="vit_tiny", vit_depth=6, cut_layer=6)),
    ("a ViT patch that does not tile the image", "model = 'vit_tiny', vit_patch_size = 5 (32 x 32 images)",
     lambda t: _run(t, model="vit_tiny", vit_patch_size=5, vit_depth=2, cut_layer=1)),
    ("ADC on a model without attention", "codec = 'adc' (model = 'resnet18')", lambda t: _cfg(codec="adc")),
    ("ADC merging into no clusters", "model = 'vit_tiny', codec = 'adc', adc_batch_ratio = 0",
     lambda t: _cfg(model="vit_tiny", codec="adc", adc_batch_ratio=0.0)),
    ("ADC keeping no tokens", "model = 'vit_tiny', codec = 'adc', adc_tokens = 0",
     lambda t: _cfg(model="vit_tiny", codec="adc", adc_tokens=0)),
    ("ADC keeping more tokens than the ViT has", "model = 'vit_tiny', vit_patch_size = 8, codec = 'adc', "
     "adc_tokens = 20 (16 patches + CLS)", lambda t: _run(t, model="vit_tiny", vit_patch_size=8, vit_depth=2,
                                                          cut_layer=1, codec="adc", adc_tokens=20)),
    ("activation dropout of 1", "act_dropout = 1.0", lambda t: _cfg(act_dropout=1.0)),
    ("pruning everything", "head_prune_sparsity = 1.0", lambda t: _cfg(head_prune_sparsity=1.0)),
    ("a pruning ramp that ends before it starts", "head_prune_start_round = 4, head_prune_end_round = 2",
     lambda t: _cfg(head_prune_start_round=4, head_prune_end_round=2)),
    ("17-bit gradient quantization", "down_quantize_bits = 17", lambda t: _cfg(down_quantize_bits=17)),
    ("a zero link rate", "link_up_mbps = 0", lambda t: _cfg(link_up_mbps=0)),
    ("a negative latency", "link_latency_ms = -5", lambda t: _cfg(link_latency_ms=-5)),
    ("an unknown auxiliary head", "exchange = 'decoupled', aux_head = 'mlp'",
     lambda t: _cfg(exchange="decoupled", aux_head="mlp")),
    ("ACP-SL bounds out of order", "codec = 'acp', p_min = 0.9", lambda t: _cfg(codec="acp", p_min=0.9)),
    ("0-bit quantization", "codec = 'quantize', quantize_bits = 0", lambda t: _cfg(codec="quantize", quantize_bits=0)),
    ("RandTopk keeping more than everything", "codec = 'randtopk', randtopk_k = 1.5",
     lambda t: _cfg(codec="randtopk", randtopk_k=1.5)),
    ("an unknown fault policy", "on_client_error = 'ignore'", lambda t: _cfg(on_client_error="ignore")),
    ("an unknown fault kind", "fail_kind = 'explode'", lambda t: _cfg(fail_kind="explode")),
    ("a zero reply timeout", "reply_timeout_s = 0", lambda t: _cfg(reply_timeout_s=0)),
    ("an unknown device", "device = 'tpu'", lambda t: _cfg(device="tpu")),
    ("a target accuracy above 100%", "target_accuracies = [1.5]", lambda t: _cfg(target_accuracies=[1.5])),
    ("more clients per round than clients", "num_clients = 2, clients_per_round = 3",
     lambda t: _cfg(clients_per_round=3)),
    ("a negative clients_per_round", "clients_per_round = -1", lambda t: _cfg(clients_per_round=-1)),
    ("a clients_per_round fraction above 1", "clients_per_round = 1.5", lambda t: _cfg(clients_per_round=1.5)),
    ("an unknown kind of SplitFed-v1 tail copies", "splitfed_tails = 'kept'", lambda t: _cfg(splitfed_tails="kept")),
    ("a SplitFed-v1 group of no clients", "splitfed_group_size = 0", lambda t: _cfg(splitfed_group_size=0)),
    ("an empty synthetic training set", "synthetic_train_size = 0", lambda t: _cfg(synthetic_train_size=0)),
    ("batched clients in a scheme without tail copies", "batch_clients = true, scheme = 'vanilla'",
     lambda t: _cfg(batch_clients=True)),
    ("batched clients with an exchange that cannot batch",
     "batch_clients = true, scheme = 'splitfed_v1', exchange = 'decoupled'",
     lambda t: _cfg(batch_clients=True, scheme="splitfed_v1", exchange="decoupled")),
    ("batched clients that may be skipped", "batch_clients = true, scheme = 'splitfed_v1', on_client_error = 'skip'",
     lambda t: _cfg(batch_clients=True, scheme="splitfed_v1", on_client_error="skip")),
    ("more clients than samples", "num_clients = 300, train_subset = 128", lambda t: _run(t, num_clients=300)),
    ("a subset larger than the dataset", "train_subset = 100000 (synthetic: 2,000 images)",
     lambda t: _run(t, train_subset=100000)),
    ("BatchNorm recalibration on more images than there are", "eval_bn_recalibration = 1000, train_subset = 128",
     lambda t: _run(t, eval_bn_recalibration=1000)),
    ("a hanging client in the local runner", "fail_client = 0, fail_kind = 'hang' (acp-flower run)",
     lambda t: _run(t, fail_client=0, fail_kind="hang")),
]
SYNTAX = [
    ("an override without '='", "--set rounds", lambda t: _overrides("rounds")),
    ("an override of the wrong type", "--set rounds=ten", lambda t: _overrides("rounds=ten")),
    ("a list for a number", "--set lr=[0.1]", lambda t: _overrides("lr=[0.1]")),
    ("a config file that is not TOML", "--config my-run.toml (holding `rounds = = 2`)",
     _toml, lambda t: (t / "my-run.toml").write_text("rounds = = 2\n")),
    ("a config file that does not exist", "--config my-run.toml (absent)", _toml),
    ("a malformed --run-config item", "acp-flower simulate --run-config 'rounds=2 codec'",
     lambda t: _run_config("rounds=2 codec")),
    ("batched clients under flwr run", "acp-flower simulate --run-config \"scheme='splitfed_v1' batch-clients=true\"",
     lambda t: _run_config("scheme='splitfed_v1' batch-clients=true")),
    ("an unknown --run-config key", "acp-flower simulate --run-config 'num-rounds=2'",
     lambda t: _run_config("num-rounds=2")),
    ("an unknown --federation-config key", "--federation-config 'num-gpus=1'", lambda t: _federation("num-gpus=1")),
    ("zero SuperNodes", "--federation-config 'num-supernodes=0'", lambda t: _federation("num-supernodes=0")),
    ("a malformed --federation-config item", "--federation-config 'num-supernodes'",
     lambda t: _federation("num-supernodes")),
    ("fewer SuperNodes than clients", "acp-flower simulate --run-config 'num-clients=3' --federation-config "
     "'num-supernodes=2'", lambda t: _simulate(t, ["num-clients=3"], ["num-supernodes=2"])),
]
DATA = [
    ("a dataset that is not there (no download)", "dataset = 'fashion-mnist', download = false, empty data-dir",
     lambda t: _load_fmnist(t), lambda t: (t / "data").mkdir()),
    ("a truncated IDX file", "train-images-idx3-ubyte cut to 3,000 bytes", lambda t: _load_fmnist(t),
     lambda t: (_fmnist(t), (t / "data/FashionMNIST/raw/train-images-idx3-ubyte").write_bytes(
         (t / "data/FashionMNIST/raw/train-images-idx3-ubyte").read_bytes()[:3000]))),
    ("an IDX file with a wrong magic number", "train-labels-idx1-ubyte with the images' magic number",
     lambda t: _load_fmnist(t),
     lambda t: (_fmnist(t), _idx(t / "data/FashionMNIST/raw/train-labels-idx1-ubyte", 0x803, (10,)))),
    ("image and label files of different counts", "10 training images, 9 training labels",
     lambda t: _load_fmnist(t),
     lambda t: (_fmnist(t), _idx(t / "data/FashionMNIST/raw/train-labels-idx1-ubyte", 0x801, (9,)))),
    ("a CIFAR-10 batch file that is not a pickle", "cifar-10-batches-py/data_batch_1 overwritten",
     lambda t: _run(t, dataset="cifar10", data_dir=str(t / "data"), download=False, train_subset=0, test_subset=0),
     lambda t: [(t / "data/cifar-10-batches-py").mkdir(parents=True, exist_ok=True)]
     + [(t / "data/cifar-10-batches-py" / f).write_bytes(b"not a pickle") for f in
        ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
         "batches.meta")]),
]
RUNS = [
    ("an out-dir that holds another run", "acp-flower run --out runs/x (twice)", lambda t: _run(t), _finished_run),
    ("an out path that is a file", "--out notes.txt", lambda t: _run(t),
     lambda t: (t / "out").write_text("my notes\n")),
    ("resuming a run that completed", "acp-flower run --resume on a finished out-dir",
     lambda t: _resume(t, rounds=1, fail_client=-1), lambda t: _run(t, rounds=1, fail_client=-1)),
    ("an unreadable checkpoint", "checkpoint.pt overwritten", lambda t: _resume(t),
     lambda t: (_checkpointed(t), (t / "out" / "checkpoint.pt").write_bytes(b"garbage"))),
    ("a checkpoint of another config", "--resume with --set lr=0.01", lambda t: _resume(t, lr=0.01), _checkpointed),
    ("checkpointing without an out-dir", "run_experiment(cfg, None, checkpoint=True)",
     lambda t: __import__("acp_flower.runners.local", fromlist=["x"]).run_experiment(_cfg(), None, checkpoint=True)),
    ("a federation smaller than num-clients", "num-clients = 3 with 2 SuperNodes (flwr run)",
     _loopback_federation),
]
WIRE = [
    ("a payload with a bad magic", "bytes that are not an acp-flower payload", lambda t: _decode(b"JUNK" + _bytes()[4:])),
    ("a truncated payload", "the first half of a payload", lambda t: _decode(_bytes()[: len(_bytes()) // 2])),
    ("trailing bytes", "a payload with 3 extra bytes", lambda t: _decode(_bytes() + b"xyz")),
    ("an unknown payload version", "version byte 9", lambda t: _decode(_bytes()[:4] + b"\x09" + _bytes()[5:])),
    ("NaN smashed data", "float values NaN", lambda t: _decode(_nan_bytes())),
    ("smashed data of the wrong shape", "a 2 x 64 x 8 x 9 payload for a cut that gives 64 x 8 x 8",
     lambda t: _server_step(_bytes(shape=(2, 64, 8, 9)))),
    ("labels out of range", "label 12 with 10 classes",
     lambda t: _server_step(_bytes()[: -4 * VALUES - 2] + bytes([1, 12]) + _bytes()[-4 * VALUES:])),
]
AREAS = {"Config keys": CONFIG, "`--set` / `--run-config` / `--federation-config` syntax": SYNTAX,
         "Dataset files": DATA, "Out-dir, checkpoints, federation": RUNS, "Wire payloads": WIRE}


def cases() -> list[Case]:
    out, n = [], 0
    for area, items in AREAS.items():
        for item in items:
            n += 1
            title, how, provoke, *setup = item
            out.append(Case(f"E{n:02d}", area, title, how, provoke, setup[0] if setup else None))
    return out


def provoke(case: Case, tmp: Path) -> tuple[BaseException | None, bool]:
    """Set the case up in ``tmp`` and run it: the exception it raised (None if it raised none)
    and whether it left the files under ``tmp`` as they were after the set-up."""
    if case.setup is not None:
        case.setup(tmp)
    before = files(tmp)
    try:
        case.provoke(tmp)
        error = None
    except BaseException as exc:  # noqa: BLE001 - what the user sees is the point
        error = exc
    return error, files(tmp) == before


def files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime: equal before and after a case = nothing written."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def message(exc: BaseException, tmp: Path) -> str:
    """``Type: text`` of an error, with ``tmp`` shown as ``<tmp>``."""
    return f"{type(exc).__name__}: {exc}".replace(str(tmp), "<tmp>")


def render(found: dict[str, str]) -> str:
    lines = ["# Error catalogue", "",
             "Bad inputs a user can make, each with the exact error it produces (`<tmp>` = the",
             "directory of the case). Every entry is a test (tests/test_errors.py): the error text",
             "must stay exactly this, be raised before any training, and leave no file behind in",
             "the out-dir or the data-dir. On the command line the same text follows `acp-flower:",
             "error:` (exit code 2). Regenerate with `python -m tests.error_cases` after changing",
             "an error message on purpose.", ""]
    for area, group in _grouped().items():
        lines += [f"## {area}", ""]
        for case in group:
            lines += [f"### {case.id}: {case.title}", "", f"Input: {case.how}", "", "```text", found[case.id],
                      "```", ""]
    return "\n".join(lines)


def _grouped() -> dict[str, list[Case]]:
    groups: dict[str, list[Case]] = {}
    for case in cases():
        groups.setdefault(case.area, []).append(case)
    return groups


def documented() -> dict[str, str]:
    """Case id -> the error text docs/errors.md gives for it."""
    import re

    return dict(re.findall(r"^### (E\d+): .*?\n```text\n(.*?)\n```", DOC.read_text(), re.MULTILINE | re.DOTALL))


if __name__ == "__main__":
    import tempfile

    found = {}
    for case in cases():
        with tempfile.TemporaryDirectory() as tmp:
            exc, _ = provoke(case, Path(tmp))
            if exc is None:
                sys.exit(f"{case.id} ({case.title}) raised no error")
            found[case.id] = message(exc, Path(tmp))
            print(case.id, found[case.id][:150])
    DOC.write_text(render(found))
    print(f"wrote {DOC} ({len(found)} cases)")
