"""Exchange registry, and every strategy x exchange x codec combination runs."""

import pytest

from acp_flower.codecs import get_codec, list_codecs
from acp_flower.config import ExperimentConfig
from acp_flower.exchanges import get_exchange, list_exchanges, register_exchange
from acp_flower.exchanges.base import Exchange
from acp_flower.runners.local import run_experiment
from strategies import list_strategies

TINY = dict(dataset="synthetic", train_subset=96, test_subset=32, num_clients=2, rounds=1, batch_size=16,
            eval_batch_size=32, optimizer="adam", lr=1e-3)
VIT = dict(model="vit_tiny", vit_depth=2, vit_embed_dim=32, vit_heads=2, vit_patch_size=8, cut_layer=1, adc_tokens=4)
"""A tiny ViT for the codecs that need attention (ADC)."""


def test_registry_lists_and_rejects():
    assert list_exchanges() == ["backprop", "decoupled"]
    with pytest.raises(ValueError, match="already registered"):
        register_exchange("backprop")(type("X", (Exchange,), {}))
    with pytest.raises(ValueError, match=r"'exchange': unknown value 'dfa'; allowed: backprop, decoupled"):
        get_exchange("dfa")
    with pytest.raises(ValueError, match=r"'exchange'.*allowed: backprop, decoupled"):
        ExperimentConfig(exchange="dfa")


@pytest.mark.parametrize("scheme", list_strategies())
@pytest.mark.parametrize("exchange", list_exchanges())
@pytest.mark.parametrize("codec", list_codecs())
@pytest.mark.slow
def test_every_strategy_exchange_and_codec_combination_trains(scheme, exchange, codec):
    model = VIT if get_codec(codec).needs_attention else {}
    frame = run_experiment(ExperimentConfig.from_dict({**TINY, **model, "scheme": scheme, "exchange": exchange,
                                                       "codec": codec}), None, progress=False)
    row = frame.iloc[0]
    assert row["exchanges"] == 6 and row["bytes_up"] > 0  # 2 clients x 48 samples / 16
    assert (row["bytes_down"] == 0) == (exchange == "decoupled")
    assert 0.0 <= row["test_accuracy"] <= 1.0 and row["train_loss"] > 0


@pytest.mark.parametrize("exchange", list_exchanges())
@pytest.mark.parametrize("codec", ["standard", "quantize"])
def test_vit_trains_with_every_exchange(exchange, codec):
    frame = run_experiment(ExperimentConfig.from_dict({**TINY, **{k: v for k, v in VIT.items() if k != "adc_tokens"},
                                                       "exchange": exchange, "codec": codec}), None, progress=False)
    row = frame.iloc[0]
    assert row["exchanges"] == 6 and (row["bytes_down"] == 0) == (exchange == "decoupled")
    assert 0.0 <= row["test_accuracy"] <= 1.0 and row["train_loss"] > 0
