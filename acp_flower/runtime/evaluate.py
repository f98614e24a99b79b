"""Central test-set evaluation of a (head, tail, codec state) triple."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from acp_flower.codecs import build_codec
from acp_flower.config import ExperimentConfig
from acp_flower.data import PreparedData, TensorImageDataset, dataset_info, seeded_subset
from acp_flower.exchanges import build_exchange
from acp_flower.models import model_cost
from acp_flower.runtime.common import StateDict, attach_codec, build_split, client_model_of


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, inputs: Iterable[torch.Tensor]) -> None:
    """Re-estimate every BatchNorm running statistic of ``module`` on ``inputs``, in place.

    The statistics become the exact average over the batches (``momentum=None``); weights
    do not change and ``module`` is left in eval mode. Why: a tail trained on smashed data
    whose pruned channels change from batch to batch (ACP-SL) keeps running statistics
    that average over many channel sets and fit none of them, the fixed inference mask
    included.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    module.eval()
    for bn in bns:
        bn.train()
    for x in inputs:
        module(x)
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    module.eval()


class Evaluator:
    """Test accuracy and loss of the global model on a test set.

    Inference goes through the codec in inference mode (``train=False``): no test labels
    reach the codec; ACP-SL applies the mask learned in training (see AcpCodec). No bytes
    are counted: evaluation is central, in the server process. When the exchange gives
    the client a prediction of its own (decoupled SL's auxiliary head), its accuracy and
    loss on the uncompressed smashed data are reported too (``aux_test_accuracy``,
    ``aux_test_loss``).

    With a ``calibration_set`` (config key ``eval_bn_recalibration``), every call first
    re-estimates the tail's BatchNorm statistics on it, sent through the same head and
    codec inference path (`recalibrate_batchnorm`). This changes only the evaluator's own
    copy of the tail; training never sees it, and it draws nothing from torch's global RNG.
    """

    def __init__(self, cfg: ExperimentConfig, test_set: Dataset, device: torch.device,
                 calibration_set: Dataset | None = None) -> None:
        split = build_split(cfg)
        self.exchange = build_exchange(cfg)
        self.model = client_model_of(cfg, self.exchange, split.head).to(device)
        self.tail = split.tail.to(device)
        self.codec = build_codec(cfg)
        info = dataset_info(cfg.dataset)
        attach_codec(cfg, self.codec, self.exchange.head(self.model))
        self.sample = torch.zeros(1, info.in_channels, info.image_size, info.image_size, device=device)
        self.loader = DataLoader(test_set, batch_size=cfg.eval_batch_size, shuffle=False)
        self.calibration = None if calibration_set is None else DataLoader(
            calibration_set, batch_size=cfg.eval_batch_size, shuffle=False, generator=torch.Generator())
        self.device = device

    def _compressed(self, smashed: torch.Tensor) -> torch.Tensor:
        """The codec's inference path: what the tail receives at test time."""
        return self.codec.decode(self.codec.encode(smashed, train=False)).to(self.device)

    def _smashed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device, non_blocking=True))

    @torch.no_grad()
    def __call__(self, head_state: StateDict, tail_state: StateDict, codec_eval_state: StateDict) -> dict[str, float]:
        self.model.load_state_dict(head_state)
        self.tail.load_state_dict(tail_state)
        self.codec.load_eval_state(codec_eval_state)
        self.model.eval()
        self.tail.eval()
        if self.calibration is not None:
            recalibrate_batchnorm(self.tail, (self._compressed(self._smashed(x)) for x, _ in self.calibration))
        server, local = _Totals(), _Totals()
        for x, y in self.loader:
            y = y.to(self.device, non_blocking=True)
            smashed = self._smashed(x)
            server.add(self.tail(self._compressed(smashed)), y)
            aux = self.exchange.local_logits(self.model, smashed)
            if aux is not None:
                local.add(aux, y)
        out = {"test_accuracy": server.accuracy, "test_loss": server.loss}
        if local.total:
            out |= {"aux_test_accuracy": local.accuracy, "aux_test_loss": local.loss}
        return out | self.client_cost()

    def client_cost(self) -> dict[str, float]:
        """Parameters and forward FLOPs per sample of the loaded client model (``models.cost``).

        The forward is what a client computes per training sample: the head, plus the
        exchange's own client-side prediction (decoupled SL's auxiliary head).
        """
        def forward(model: torch.nn.Module, x: torch.Tensor) -> None:
            self.exchange.local_logits(model, model(x))

        cost = model_cost(self.model, self.sample, forward)
        return {"client_params": cost.params, "client_params_nonzero": cost.params_nonzero,
                "client_flops": cost.flops, "client_flops_sparse": cost.flops_sparse}


class _Totals:
    """Correct predictions and summed cross-entropy over test batches."""

    def __init__(self) -> None:
        self.correct, self.loss_sum, self.total = 0, 0.0, 0

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        self.correct += int((logits.argmax(1) == y).sum())
        self.total += y.numel()

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    @property
    def loss(self) -> float:
        return self.loss_sum / self.total


def build_evaluator(cfg: ExperimentConfig, data: PreparedData, device: torch.device) -> Evaluator:
    """The test-set evaluator of a run, with its BatchNorm calibration set if the config asks.

    The calibration samples are a seeded draw from the run's training samples, without
    augmentation (the augmentation would draw from torch's global RNG and so change training).
    """
    calibration = None
    if cfg.eval_bn_recalibration:
        pool = np.concatenate(data.partitions)
        pick = np.sort(pool[seeded_subset(len(pool), cfg.eval_bn_recalibration, cfg.seed, "eval_bn_recalibration",
                                          key=6)])
        ts = data.train_set
        plain = TensorImageDataset(ts.data, ts.targets, ts.mean, ts.std) if ts.transform is not None else ts
        calibration = Subset(plain, pick.tolist())
    return Evaluator(cfg, data.test_set, device, calibration_set=calibration)
