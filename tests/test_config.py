"""Config validation: every bad input names the key and the allowed values."""

import dataclasses
import warnings

import pytest

from acp_flower.codecs.acp import AcpOptions
from acp_flower.codecs.quantize import QuantizeOptions
from acp_flower.config import ExperimentConfig, GeneralConfig
from acp_flower.options import UnusedOptionWarning, declare_options, option_groups
from strategies import get_strategy


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"dataset": "imagenet"}, r"'dataset'.*allowed: cifar10, fashion-mnist, mnist, synthetic"),
        ({"codec": "zip"}, r"'codec'.*allowed: acp, adc, quantize, randtopk, standard"),
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
        ({"exchange": "dfa"}, r"'exchange'.*allowed: backprop, decoupled"),
        ({"exchange": "decoupled", "aux_head": "big"}, r"'aux_head'.*allowed: conv_mlp, linear"),
        ({"act_dropout": 1.0}, r"'act_dropout'.*\[0, 1\)"),
        ({"head_prune_sparsity": 1.0}, r"'head_prune_sparsity'.*\[0, 1\)"),
        ({"head_prune_start_round": 4, "head_prune_end_round": 2}, r"'head_prune_end_round'.*>= head_prune_start_round"),
        ({"down_quantize_bits": -1}, r"'down_quantize_bits'.*0..16"),
        ({"link_up_mbps": 0.0}, r"'link_up_mbps'.*> 0"),
        ({"link_down_mbps": -5.0}, r"'link_down_mbps'.*> 0"),
        ({"link_latency_ms": -1.0}, r"'link_latency_ms'.*>= 0"),
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


def test_unknown_scheme_names_the_key_and_the_strategies():
    # schemes live above the core, so the drivers check them first thing (get_strategy)
    with pytest.raises(ValueError, match=r"'scheme'.*allowed: splitfed_v1, splitfed_v2, vanilla"):
        get_strategy("fedavg")


def test_every_declared_option_is_a_config_key_with_its_default():
    cfg = ExperimentConfig()
    declared = {f.name: f.default for g in option_groups() for f in dataclasses.fields(g.cls)}
    general = {f.name for f in dataclasses.fields(GeneralConfig)}
    assert {"acp_scoring", "p_base", "randtopk_k", "quantize_bits"} <= set(declared)
    assert set(cfg.to_dict()) == general | set(declared)
    assert all(getattr(cfg, key) == default for key, default in declared.items())


def test_options_of_the_selected_component():
    assert ExperimentConfig(codec="quantize", quantize_bits=4).options("codec") == QuantizeOptions(quantize_bits=4)
    assert ExperimentConfig(codec="acp", p_base=0.65).options("codec") == AcpOptions(p_base=0.65)
    assert ExperimentConfig(codec="standard").options("codec") is None  # declares no options
    with pytest.raises(KeyError, match="'nope'"):
        ExperimentConfig().options("nope")


def test_an_option_of_an_unselected_codec_warns_naming_key_and_codec():
    with pytest.warns(UnusedOptionWarning, match=r"randtopk_k = 0.2 belong to codec 'randtopk' but codec = 'acp'"):
        ExperimentConfig(codec="acp", randtopk_k=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # defaults, or options of the selected codec: silent
        ExperimentConfig(codec="randtopk", randtopk_k=0.2)
        ExperimentConfig(codec="acp")


def test_an_unselected_codec_option_is_still_validated():
    with pytest.raises(ValueError, match="'quantize_bits'"):
        ExperimentConfig(codec="acp", quantize_bits=99)


def test_a_key_declared_twice_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Clash:
        p_base: float = 0.5

    with pytest.raises(ValueError, match=r"'p_base' of codec 'clash' is already declared by codec 'acp'"):
        declare_options(Clash, kind="codec", name="clash")


@pytest.mark.parametrize("override", ["exchange=dfa", "act_dropout=1.5", "head_prune_sparsity=1",
                                      "down_quantize_bits=20", "link_up_mbps=0", "link_latency_ms=-3",
                                      "aux_head=big", "scheme=fedavg"])
def test_cli_refuses_bad_keys_before_writing_anything(tmp_path, capsys, override):
    from acp_flower.cli import main

    out = tmp_path / "out"
    assert main(["run", "--set", "dataset=synthetic", "--set", override, "--out", str(out), "--no-progress"]) == 2
    assert f"'{override.split('=')[0]}'" in capsys.readouterr().err and not out.exists()
