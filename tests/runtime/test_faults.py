"""Divergence guard, client-fault policy (stop / skip) and fault injection, local runner."""

import json
import math
import pickle

import pandas as pd
import pytest
import torch

from acp_flower.config import ExperimentConfig
from acp_flower.data import prepare_data
from acp_flower.guard import NonFiniteError, check_finite
from acp_flower.metrics import METRIC_COLUMNS
from acp_flower.runners.local import LocalExecutor, run_experiment
from acp_flower.runtime import ClientRoundError, ClientTask, build_client, build_server
from acp_flower.runtime.faults import CORRUPTIONS, FaultLog, corrupt, locate
from acp_flower.wire import Payload, PayloadError, to_bytes

TINY = dict(dataset="synthetic", train_subset=128, test_subset=64, num_clients=2, rounds=2, batch_size=32,
            eval_batch_size=64, optimizer="adam", lr=1e-3, codec="standard")
DIVERGING = dict(optimizer="sgd", lr=1e12)
"""A learning rate no model survives: the first step blows the weights up."""


def _cfg(**changes) -> ExperimentConfig:
    return ExperimentConfig.from_dict({**TINY, **changes})


def test_check_finite_names_the_tensor_and_counts():
    check_finite("loss", torch.tensor([1.0, 2.0]))  # finite: nothing happens
    bad = torch.tensor([1.0, math.nan, math.inf, -math.inf])
    with pytest.raises(NonFiniteError, match=r"non-finite smashed data: 1 NaN and 2 inf of 4 values") as info:
        check_finite("smashed data", bad)
    assert info.value.tensor == "smashed data"


def test_located_errors_keep_their_type_and_survive_pickling():
    # Ray sends the tail actor's exceptions to the client pickled
    err = pickle.loads(pickle.dumps(locate(NonFiniteError("non-finite loss", "loss"), 3, 1, 7)))
    assert isinstance(err, NonFiniteError) and err.tensor == "loss"
    assert str(err) == "round 3, client 1, batch 7: non-finite loss"
    payload_err = locate(PayloadError("bad magic"), 2, 0, 0)
    assert isinstance(payload_err, PayloadError) and str(payload_err) == "round 2, client 0, batch 0: bad magic"


def test_fault_log_skips_or_stops():
    skip = FaultLog("skip")
    skip.report(1, 2, "boom")
    assert skip.as_dicts() == [{"server_round": 1, "client_id": 2, "node_id": -1, "reason": "boom", "detail": ""}]
    with pytest.raises(ClientRoundError, match=r"client 2 failed in round 1: boom \(on-client-error=stop\)"):
        FaultLog("stop").report(1, 2, "boom")


@pytest.mark.parametrize("bits", [0, 8])
@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_every_corrupted_upload_is_refused_by_the_server(kind, bits):
    # Prepare: a well-formed upload of the model's cut shape (dense, or 8-bit quantized)
    cfg = _cfg()
    server = build_server(cfg, torch.device("cpu"))
    shape = (4, *server.sample_shape)
    labels = torch.tensor([0, 1, 2, 3])
    if bits:
        payload = Payload(shape, torch.randint(0, 256, (math.prod(shape),)), labels=labels, bits=8,
                          scale=torch.tensor([0.1]), offset=torch.tensor([-1.0]))
    else:
        payload = Payload(shape, torch.randn(math.prod(shape)), labels=labels)
    up = to_bytes(payload)
    assert server.step(up)  # the clean upload is answered with a gradient
    tail_before = {k: v.clone() for k, v in server.tail.state_dict().items()}
    # Execute / Assert: each corruption is a PayloadError, and the tail is not trained on it
    with pytest.raises(PayloadError):
        server.step(corrupt(kind, payload, up))
    for key, value in server.tail.state_dict().items():
        assert torch.equal(value, tail_before[key]), key


@pytest.mark.parametrize("labels,message", [
    (torch.tensor([0, 1, 2, 10]), r"label 10 out of range for 10 classes"),
    (None, r"carries no labels"),
])
def test_server_refuses_uploads_it_cannot_train_on(labels, message):
    server = build_server(_cfg(), torch.device("cpu"))
    shape = (4, *server.sample_shape)
    with pytest.raises(PayloadError, match=message):
        server.step(to_bytes(Payload(shape, torch.zeros(math.prod(shape)), labels=labels)))


def test_divergence_stops_the_run_naming_round_client_batch_and_tensor(tmp_path):
    # Execute
    with pytest.raises(ClientRoundError, match=r"client 0 failed in round 1: round 1, client 0, batch \d+: "
                                               r"non-finite [a-z ()-,.]+") as info:
        run_experiment(_cfg(**DIVERGING), tmp_path / "out", progress=False)
    # Assert: no round was recorded (no NaN row); summary.json says why
    assert "on-client-error=stop" in str(info.value)
    metrics = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert list(metrics.columns) == list(METRIC_COLUMNS) and metrics.empty
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "failed" and "non-finite" in summary["reason"]
    assert [(f["server_round"], f["client_id"]) for f in summary["failures"]] == [(1, 0)]


def test_divergence_of_every_client_under_skip_stops_without_a_result_row(tmp_path):
    # Every client diverges, each is skipped: the round has nothing to report
    with pytest.raises(RuntimeError, match=r"round 1: no client finished the round"):
        run_experiment(_cfg(**DIVERGING, on_client_error="skip"), tmp_path / "out", progress=False)
    assert pd.read_csv(tmp_path / "out" / "metrics.csv").empty
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [f["client_id"] for f in summary["failures"]] == [0, 1]


@pytest.mark.parametrize("scheme", ["vanilla", "splitfed_v2"])
@pytest.mark.parametrize("kind", ["raise", *CORRUPTIONS])
def test_injected_fault_skipped_for_its_round(tmp_path, scheme, kind):
    # Prepare: client 1 fails in round 1 as ``kind`` says; policy skip
    cfg = _cfg(scheme=scheme, fail_client=1, fail_round=1, fail_kind=kind, on_client_error="skip")
    # Execute
    frame = run_experiment(cfg, tmp_path / "out", progress=False)
    # Assert: round 1 without client 1, round 2 with both; the fault is listed; results are finite
    assert frame["clients"].tolist() == [1, 2]
    assert frame[["test_accuracy", "test_loss", "train_loss"]].notna().all().all()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "completed"
    [fault] = summary["failures"]
    assert (fault["server_round"], fault["client_id"]) == (1, 1)
    expected = "failed on purpose" if kind == "raise" else "round 1, client 1, batch 0: "
    assert expected in fault["reason"]


def test_skipped_client_goes_back_to_its_round_start_state():
    # Prepare: client 1's first upload of round 1 is truncated; its head forward has
    # already moved the BatchNorm running statistics when the server refuses the upload
    cfg = _cfg(fail_client=1, fail_kind="truncate", on_client_error="skip")
    data = prepare_data(cfg)
    clients = {cid: build_client(cfg, cid, data.train_set, part, torch.device("cpu"))
               for cid, part in enumerate(data.partitions)}
    executor = LocalExecutor(cfg, clients, torch.device("cpu"))
    before = clients[1].state_dict()
    # Execute
    results = executor.train([ClientTask(0, 1, None), ClientTask(1, 1, None)])
    # Assert: client 0 trained, client 1 is exactly as before the round (as on Flower,
    # where a failed ClientApp never writes context.state)
    assert [r.client_id for r in results] == [0]
    after = clients[1].state_dict()
    for part in ("head", "optimizer", "codec", "rng"):
        assert before[part].keys() == after[part].keys()
        for key in before[part]:
            assert torch.equal(before[part][key], after[part][key]), (part, key)
    assert [f["client_id"] for f in executor.faults.as_dicts()] == [1]


def test_hang_is_refused_by_the_local_runner(tmp_path):
    with pytest.raises(ValueError, match=r"'fail_kind': 'hang' needs a reply timeout"):
        run_experiment(_cfg(fail_client=0, fail_kind="hang"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
