"""Central test-set evaluation of a (head, tail, codec state) triple."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from acp_flower.codecs import build_codec
from acp_flower.config import ExperimentConfig
from acp_flower.runtime.common import StateDict, build_split


class Evaluator:
    """Test accuracy and loss of the global model on a test set.

    Inference goes through the codec in inference mode (``train=False``): no test labels
    reach the codec; ACP-SL applies the mask learned in training (see AcpCodec). No bytes
    are counted: evaluation is central, in the server process.
    """

    def __init__(self, cfg: ExperimentConfig, test_set: Dataset, device: torch.device) -> None:
        split = build_split(cfg)
        self.head, self.tail = split.head.to(device), split.tail.to(device)
        self.codec = build_codec(cfg)
        self.loader = DataLoader(test_set, batch_size=cfg.eval_batch_size, shuffle=False)
        self.device = device

    @torch.no_grad()
    def __call__(self, head_state: StateDict, tail_state: StateDict, codec_eval_state: StateDict) -> tuple[float, float]:
        self.head.load_state_dict(head_state)
        self.tail.load_state_dict(tail_state)
        self.codec.load_eval_state(codec_eval_state)
        self.head.eval()
        self.tail.eval()
        correct, loss_sum, total = 0, 0.0, 0
        for x, y in self.loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            smashed = self.codec.decode(self.codec.encode(self.head(x), train=False))
            logits = self.tail(smashed.to(self.device))
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            total += y.numel()
        return correct / total, loss_sum / total
