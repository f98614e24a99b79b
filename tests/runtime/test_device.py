"""Device selection (the GPU path, exercised on a CPU by pretending about CUDA)."""

from __future__ import annotations

import pytest
import torch

from acp_flower.runtime import resolve_device


@pytest.mark.parametrize("available, expected", [(True, "cuda"), (False, "cpu")])
def test_auto_picks_cuda_only_when_available(monkeypatch, available, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert resolve_device("auto") == torch.device(expected)


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_explicit_cuda_without_a_gpu_names_the_key(monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=rf"config key 'device': '{device}' requested but CUDA is not available"):
        resolve_device(device)


def test_explicit_cuda_index_is_kept(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
