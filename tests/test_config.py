"""Config validation: every bad input names the key and the allowed values."""

import pytest

from acp_flower.config import ExperimentConfig


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"dataset": "imagenet"}, r"'dataset'.*allowed: cifar10, fashion-mnist, mnist, synthetic"),
        ({"codec": "zip"}, r"'codec'.*allowed: standard, acp, randtopk, quantize"),
        ({"scheme": "fedavg"}, r"'scheme'.*allowed: vanilla, splitfed_v1, splitfed_v2"),
        ({"partition": "random"}, r"'partition'.*allowed: iid, dirichlet, shard, pathological"),
        ({"acp_scoring": "l1"}, r"'acp_scoring'.*allowed: lcis, l0, random"),
        ({"acp_ratio": "auto"}, r"'acp_ratio'.*allowed: adaptive, fixed, random"),
        ({"p_min": 0.75}, r"p_min <= p_base <= p_max"),
        ({"p_base": 0.9}, r"p_min <= p_base <= p_max"),
        ({"p_max": 1.0}, r"'p_max'.*\[0, 1\)"),
        ({"p_min": -0.1}, r"'p_min'.*\[0, 1\)"),
        ({"quantize_bits": 0}, r"'quantize_bits'.*1..16"),
        ({"quantize_bits": 17}, r"'quantize_bits'.*1..16"),
        ({"batch_size": 0}, r"'batch_size'.*>= 1"),
        ({"num_clients": 0}, r"'num_clients'.*>= 1"),
        ({"cut_layer": 10}, r"'cut_layer'.*1..9"),
        ({"cut_layer": 0}, r"'cut_layer'.*1..9"),
        ({"randtopk_k": 0.0}, r"'randtopk_k'"),
        ({"randtopk_alpha": 1.0}, r"'randtopk_alpha'"),
        ({"dirichlet_alpha": 0.0}, r"'dirichlet_alpha'"),
        ({"device": "tpu"}, r"'device'"),
        ({"out_dir": "relative/path"}, r"'out_dir'.*absolute"),
        ({"target_accuracies": [65]}, r"'target_accuracies'"),
        ({"stop_accuracy": 1.5}, r"'stop_accuracy'"),
        ({"eval_bn_recalibration": -1}, r"'eval_bn_recalibration'"),
        ({"batch_size": "big"}, r"'batch_size': expected int"),
        ({"rounds": 2.5}, r"'rounds': expected int"),
        ({"augment": "yes"}, r"'augment': expected bool"),
        ({"bogus_key": 1}, r"unknown config key\(s\) \['bogus_key'\]"),
    ],
)
def test_bad_values_name_the_key(changes, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig.from_dict(changes)


def test_toml_overrides_and_round_trip(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('codec = "quantize"\nrounds = 3\ntarget_accuracies = [0.65, 0.91]\n')
    cfg = ExperimentConfig.from_toml(path, ["rounds=5", "scheme=splitfed_v1", "lr=1e-3", "augment=true"])
    assert (cfg.codec, cfg.rounds, cfg.scheme, cfg.lr, cfg.augment) == ("quantize", 5, "splitfed_v1", 1e-3, True)
    assert cfg.target_accuracies == (0.65, 0.91)
    (tmp_path / "r.toml").write_text(cfg.to_toml())
    assert ExperimentConfig.from_toml(tmp_path / "r.toml") == cfg


def test_run_config_kebab_case_round_trip():
    cfg = ExperimentConfig(num_clients=3, target_accuracies=(0.5, 0.7))
    rc = cfg.to_run_config()
    assert rc["num-clients"] == 3 and rc["target-accuracies"] == "0.5,0.7"
    assert ExperimentConfig.from_run_config(rc) == cfg
    with pytest.raises(ValueError, match="unknown config key"):
        ExperimentConfig.from_run_config({"num-client": 3})


def test_missing_config_file_and_bad_override(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        ExperimentConfig.from_toml(tmp_path / "nope.toml")
    with pytest.raises(ValueError, match="key=value"):
        ExperimentConfig.from_toml(None, ["rounds"])
