"""Unit tests of the Flower app's pieces that need neither the engine nor a GPU.

The GPU code paths are exercised on CPU here: the tail actor's resource request and its
device visibility, fractional client GPUs in ``--federation-config``, and the pool size
those fractions give on a (mocked) GPU node.
"""

import random
import threading
import time

import pytest
import ray
import torch
from flwr.app import RecordDict

from acp_flower.apps import records
from acp_flower.apps.executor import short_reason, task_waves
from acp_flower.apps.launch import (
    format_federation_config,
    parse_federation_config,
    resolve_run_config,
)
from acp_flower.apps.ray_tail import NAMESPACE, TurnOrder, tail_actor_options
from acp_flower.apps.server_app import client_capacity
from acp_flower.config import ExperimentConfig
from acp_flower.runtime.stats import ClientResult, TrafficStats
from strategies.base import ClientTask


def test_task_and_result_round_trip():
    head = {"w": torch.randn(4, 3), "n": torch.tensor(7)}
    task, config = records.content_to_task(records.task_to_content(ClientTask(2, 3, head, 1), interleave=True))
    assert (task.client_id, task.server_round, task.tail_slot, config["interleave"]) == (2, 3, 1, True)
    assert all(torch.equal(task.head_state[k], head[k]) for k in head)
    assert records.content_to_task(records.task_to_content(ClientTask(0, 1, None)))[0].head_state is None
    result = ClientResult(2, head, 64, TrafficStats(2, 10, 20, 80, 160, 1.25), {"s": torch.ones(3, dtype=torch.float64)})
    back = records.content_to_result(records.result_to_content(result))
    assert back.traffic == result.traffic and back.num_examples == 64
    assert back.codec_eval_state["s"].dtype == torch.float64


def test_client_state_in_context_state():
    state = RecordDict()
    assert records.load_client_state(state) is None and records.state_version(state) == 0
    saved = {"head": {"w": torch.randn(2)}, "optimizer": {}, "rng": {"state": torch.arange(5, dtype=torch.uint8)}}
    records.save_client_state(state, saved, server_round=1)
    records.save_client_state(state, saved, server_round=2)
    loaded = records.load_client_state(state)
    assert records.state_version(state) == 2 and loaded["optimizer"] == {}
    assert torch.equal(loaded["rng"]["state"], saved["rng"]["state"])


def test_tail_actor_resources_and_gpu_visibility():
    cpu = tail_actor_options(ExperimentConfig(device="cpu", num_clients=5), run_id=7)
    assert (cpu["name"], cpu["namespace"], cpu["num_cpus"], cpu["num_gpus"]) == ("acp-tail-7", NAMESPACE, 0, 0.0)
    assert "runtime_env" not in cpu and cpu["max_concurrency"] >= 5
    # no GPU reserved but device auto/cuda: keep the GPUs visible (Ray would hide them)
    auto = tail_actor_options(ExperimentConfig(device="auto"), run_id=7)
    assert auto["runtime_env"]["env_vars"]["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] == "0"
    # a reserved GPU fraction: Ray sets CUDA_VISIBLE_DEVICES itself
    frac = tail_actor_options(ExperimentConfig(device="cuda", tail_num_gpus=0.5), run_id=7)
    assert frac["num_gpus"] == 0.5 and "runtime_env" not in frac


def test_federation_config_fractional_gpus():
    values = parse_federation_config(["num-supernodes=5 client-resources-num-gpus=0.25", "client-resources-num-cpus=2"])
    assert values == {"num-supernodes": 5, "client-resources-num-gpus": 0.25, "client-resources-num-cpus": 2}
    assert parse_federation_config(["client-resources-num-gpus=1"])["client-resources-num-gpus"] == 1.0
    assert parse_federation_config([format_federation_config(values)]) == values
    for bad, message in [("client-resources-num-cpus=0.5", "must be int"), ("num-gpus=1", "unknown"),
                         ("client-resources-num-gpus=-1", ">= 0"), ("num-supernodes=0", ">= 1")]:
        with pytest.raises(ValueError, match=message):
            parse_federation_config([bad])


def test_run_config_paths_made_absolute(tmp_path):
    values = resolve_run_config(["rounds=2 out-dir='runs/x' data-dir='d'"], cwd=tmp_path)
    assert values == {"rounds": 2, "out-dir": str(tmp_path / "runs/x"), "data-dir": str(tmp_path / "d")}
    with pytest.raises(ValueError, match="unknown config key"):
        resolve_run_config(["roundz=2"])


def test_client_capacity_with_fractional_gpus(monkeypatch):
    # Flower's own rule on a mocked node: 8 CPUs and 1 GPU; clients need 1 CPU and 0.25 GPU
    monkeypatch.setattr(ray, "nodes", lambda: [{"Resources": {"CPU": 8.0, "GPU": 1.0}}])
    hellos = [{"num-cpus": 1.0, "num-gpus": 0.25}] * 3
    assert client_capacity(hellos) == 4
    assert client_capacity([{"num-cpus": 2.0, "num-gpus": 0.0}]) == 4


def test_turn_order_is_round_robin_in_task_order():
    # Prepare: clients 0, 1, 2 with 3, 1 and 2 batches call concurrently, in random order
    turns, order = TurnOrder(), []
    turns.begin([0, 1, 2])

    def client(cid: int, batches: int) -> None:
        time.sleep(random.random() * 0.05)
        for b in range(batches):
            turns.run(cid, lambda b=b: order.append((cid, b)), timeout=10)
        turns.finish(cid)

    threads = [threading.Thread(target=client, args=(c, n)) for c, n in [(2, 2), (0, 3), (1, 1)]]
    # Execute
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    turns.end()
    # Assert: batch 0 of every client, then batch 1 of those left, ...
    assert order == [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2)]


def test_turn_order_skips_a_client_that_leaves():
    turns = TurnOrder()
    turns.begin([0, 1])
    turns.finish(0)  # e.g. failed before its first batch
    assert turns.run(1, lambda: "ran", timeout=1) == "ran"
    with pytest.raises(RuntimeError, match="not in the interleaved round"):
        turns.run(5, lambda: None, timeout=1)


def test_task_waves_keep_slots_distinct():
    tasks = [ClientTask(c, 1, None, s) for c, s in [(0, 0), (1, 1), (2, 0), (3, 2)]]
    assert [[t.client_id for t in w] for w in task_waves(tasks)] == [[0, 1], [2, 3]]


def test_short_reason_from_flower_error():
    wrapped = ("<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()\x1b[39m"
               "\n  File ...\nException ClientAppException occurred. Message: client 1 failed on purpose'>")
    assert short_reason(wrapped) == "client 1 failed on purpose"
    assert short_reason("<class 'ValueError'>:<'boom'>") == "ValueError: boom"
