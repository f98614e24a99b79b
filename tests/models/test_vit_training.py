"""A few rounds of the small ViT learn (beat chance) with every codec, ADC included."""

import pytest

from acp_flower.codecs import list_codecs
from acp_flower.config import ExperimentConfig
from acp_flower.runners.local import run_experiment

TINY_VIT = dict(dataset="synthetic", model="vit_tiny", vit_depth=2, vit_embed_dim=32, vit_heads=2, vit_patch_size=8,
                cut_layer=1, rounds=3, batch_size=32, optimizer="adam", lr=0.003, num_clients=2)


@pytest.mark.slow
@pytest.mark.parametrize("codec", list_codecs())
def test_vit_beats_chance_with_every_codec(codec):
    options = {"adc_tokens": 9} if codec == "adc" else {}
    frame = run_experiment(ExperimentConfig.from_dict({**TINY_VIT, "codec": codec, **options}), None, progress=False)
    # 10 balanced classes, 500 test images: chance is 0.10 +- 0.013; 0.15 is ~4 standard deviations above it.
    assert frame["test_accuracy"].iloc[-1] > 0.15
    assert frame["bytes_up"].iloc[-1] > 0
