"""ACP-SL: label-aware channel importance scoring (LCIS) + adaptive channel pruning (ACP).

Paper: "Exploiting Label-Aware Channel Scoring for Adaptive Channel Pruning in Split
Learning" (arXiv 2603.09792), section II; equation numbers below are the paper's.

Eq. (10) as printed is degenerate: by (3) and (5) both normalized scores sum to one over
channels, so sum_i S_inst_i = 0, every S_hist and S_comb sums to zero too, D_inst = 0 for
every t and W_t = D_hist / D_inst of (12) is 0/0. ``acp_group_score="literal"`` computes
it anyway (W is then a ratio of rounding noise; a non-finite W falls back to 1), and the
default ``"ratio"`` uses a well-defined group score instead: D_inst = sum_i S_intra_i /
sum_i S_inter_i, the batch's intra/inter-label similarity ratio (non-negative for
post-ReLU maps). W_t = D_hist / D_inst then shrinks the pruning ratio (keeps more
channels) when the current batch separates labels better than the running average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from acp_flower.codecs.base import Codec, StateDict, register_codec
from acp_flower.options import check, check_choice
from acp_flower.wire import Payload

_TINY = 1e-30


@dataclass(frozen=True)
class AcpOptions:
    """Options of ACP-SL (paper section II; P_min/P_base/P_max are eq. 13's)."""

    acp_scoring: str = "lcis"
    """Channel scoring: lcis (paper), l0 (non-zero count), random."""
    acp_ratio: str = "adaptive"
    """Pruning ratio: adaptive (eqs 10-13), fixed (p_base), random in [p_min, p_max]."""
    acp_group_score: str = "ratio"
    """Group score of eq. (10): ratio (intra/inter, well defined) or literal (0/0, see docs)."""
    acp_score_mix: str = "combined"
    """Channel score used for pruning: combined (eq. 8), instant (eq. 6), historical (eq. 7)."""
    acp_eval_mask: str = "hist"
    """Channels kept at inference (no labels): hist (top by S_hist at the last ratio) or all."""
    p_min: float = 0.6
    """Minimum pruning ratio."""
    p_base: float = 0.7
    """Base pruning ratio."""
    p_max: float = 0.8
    """Maximum pruning ratio."""

    def __post_init__(self) -> None:
        check_choice("acp_scoring", self.acp_scoring, ("lcis", "l0", "random"))
        check_choice("acp_ratio", self.acp_ratio, ("adaptive", "fixed", "random"))
        check_choice("acp_group_score", self.acp_group_score, ("ratio", "literal"))
        check_choice("acp_score_mix", self.acp_score_mix, ("combined", "instant", "historical"))
        check_choice("acp_eval_mask", self.acp_eval_mask, ("hist", "all"))
        for name in ("p_min", "p_base", "p_max"):
            check(name, 0.0 <= getattr(self, name) < 1.0, "a ratio in [0, 1)")
        if not self.p_min <= self.p_base <= self.p_max:
            raise ValueError(
                f"config keys 'p_min', 'p_base', 'p_max': need p_min <= p_base <= p_max, "
                f"got p_min={self.p_min}, p_base={self.p_base}, p_max={self.p_max}"
            )


def lcis_components(smashed: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw intra- and inter-label similarity per channel, eqs. (1), (2) and (4).

    Parameters
    ----------
    smashed : Tensor
        B x N x H x W smashed data (float).
    labels : Tensor
        B integer labels.

    Returns
    -------
    (S_intra, S_inter) : tuple of Tensor
        Each of shape N, float64. S_inter is zero when fewer than two labels are present.
    """
    if smashed.dim() < 2 or labels.shape != smashed.shape[:1]:
        raise ValueError(f"need smashed B x N x ... and B labels, got {tuple(smashed.shape)} and {tuple(labels.shape)}")
    a = smashed.detach().double().reshape(smashed.shape[0], smashed.shape[1], -1)  # B x N x P
    _, inverse = torch.unique(labels, return_inverse=True)
    onehot = F.one_hot(inverse, int(inverse.max()) + 1).to(a)  # B x K
    counts = onehot.sum(0)  # K
    means = torch.einsum("bk,bnp->knp", onehot, a) / counts[:, None, None]  # (1): K x N x P
    # (2): mean over labels of the per-label mean of <A_b,i , Abar_{y_b},i>.
    dots = (a * means[inverse]).sum(-1)  # B x N
    s_intra = ((onehot.T @ dots) / counts[:, None]).mean(0)
    k = means.shape[0]
    if k < 2:
        return s_intra, torch.zeros_like(s_intra)
    gram = torch.einsum("knp,lnp->nkl", means, means)  # N x K x K
    rows, cols = torch.triu_indices(k, k, offset=1)
    return s_intra, gram[:, rows, cols].mean(-1)  # (4)


def _normalize(scores: torch.Tensor) -> torch.Tensor:
    """Eqs. (3)/(5); an all-zero score vector becomes uniform so every term stays defined."""
    total = scores.sum()
    if total.abs() <= _TINY:
        return torch.full_like(scores, 1.0 / scores.numel())
    return scores / total


def lcis_instant_scores(smashed: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """S_inst of eq. (6) for a batch: normalized intra minus normalized inter similarity.

    Parameters
    ----------
    smashed : Tensor
        B x N x H x W smashed data.
    labels : Tensor
        B integer labels.

    Returns
    -------
    Tensor
        N channel scores (float64); higher = more important. They sum to zero.
    """
    s_intra, s_inter = lcis_components(smashed, labels)
    return _normalize(s_intra) - _normalize(s_inter)


@register_codec("acp", options=AcpOptions)
class AcpCodec(Codec):
    """ACP-SL codec: prune the round(P_t N) lowest-scoring channels, send the rest + mask.

    Options: ``AcpOptions``. The adaptive ratio always uses LCIS's group score, so the scoring ablation changes
    only which channels are kept. Inference keeps the top channels by S_hist at the last
    training ratio (the combined score at t = T equals S_hist), needing no labels; with
    ``acp_eval_mask = "all"`` it keeps every channel (an ablation: the paper is silent).
    """

    def __init__(self, options: AcpOptions, *, total_steps: int = 1, seed: int = 0) -> None:
        super().__init__(options, total_steps=total_steps, seed=seed)
        self.scoring, self.ratio_mode = options.acp_scoring, options.acp_ratio
        self.group_score, self.score_mix = options.acp_group_score, options.acp_score_mix
        self.eval_mask = options.acp_eval_mask
        self.p_min, self.p_base, self.p_max = options.p_min, options.p_base, options.p_max
        self.t = 0
        self.s_hist: torch.Tensor | None = None  # N, float64 (eq. 7)
        self.d_hist = 0.0  # running mean of D_inst (eq. 11)
        self.d_count = 0
        self.last_ratio = options.p_base
        self.last_w = 1.0
        self.last_d_inst = float("nan")
        self.degenerate_steps = 0  # steps whose W_t was not finite

    # ------------------------------------------------------------ scores
    def _channel_scores(self, smashed: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        s_intra, s_inter = lcis_components(smashed, labels)
        if self.scoring == "lcis":
            scores = _normalize(s_intra) - _normalize(s_inter)
        elif self.scoring == "l0":
            scores = _normalize((smashed.detach() != 0).sum(dim=tuple(i for i in range(smashed.dim()) if i != 1)).double())
        else:
            scores = torch.rand(smashed.shape[1], generator=self.generator, dtype=torch.float64)
        return scores, (s_intra, s_inter)

    def _group_score(self, s_comb: torch.Tensor, s_intra: torch.Tensor, s_inter: torch.Tensor) -> float:
        if self.group_score == "literal":
            return float(s_comb.mean())  # eq. (10) as printed: identically 0 up to rounding
        inter = float(s_inter.sum())
        return float(s_intra.sum()) / inter if inter > _TINY else float("nan")

    def _pruning_ratio(self, s_comb: torch.Tensor, components: tuple) -> float:
        if self.ratio_mode == "fixed":
            return self.p_base
        if self.ratio_mode == "random":
            u = float(torch.rand((), generator=self.generator, dtype=torch.float64))
            return self.p_min + u * (self.p_max - self.p_min)
        d_inst = self._group_score(s_comb, *components)
        self.last_d_inst = d_inst
        if d_inst == d_inst:  # not NaN: update the running mean of eq. (11)
            self.d_count += 1
            self.d_hist += (d_inst - self.d_hist) / self.d_count
        w = self.d_hist / d_inst if d_inst != 0 and d_inst == d_inst else float("nan")  # eq. (12)
        if not math.isfinite(w):
            self.degenerate_steps += 1
            w = 1.0
        self.last_w = w
        return max(self.p_min, min(w * self.p_base, self.p_max))  # eq. (13)

    # ------------------------------------------------------------ codec
    def encode(self, smashed: torch.Tensor, labels: torch.Tensor | None = None, *, train: bool = True) -> Payload:
        n = smashed.shape[1]
        if not train:
            scores = self.s_hist if self.s_hist is not None else torch.zeros(n, dtype=torch.float64)
            return self._prune(smashed, scores, self.last_ratio if self.eval_mask == "hist" else 0.0)
        if labels is None:
            raise ValueError("ACP-SL needs the batch labels to score channels during training")
        self.t += 1
        s_inst, components = self._channel_scores(smashed, labels.to(smashed.device))
        s_inst = s_inst.cpu()
        if self.s_hist is None or self.s_hist.numel() != n:
            self.s_hist = torch.zeros(n, dtype=torch.float64)
        self.s_hist += (s_inst - self.s_hist) / self.t  # eq. (7)
        a_t = max(0.0, 1.0 - self.t / self.total_steps)  # eq. (9)
        s_comb = {"combined": a_t * s_inst + (1 - a_t) * self.s_hist,  # eq. (8)
                  "instant": s_inst, "historical": self.s_hist}[self.score_mix]
        self.last_ratio = self._pruning_ratio(s_comb, components)
        return self._prune(smashed, s_comb, self.last_ratio)

    @staticmethod
    def _prune(smashed: torch.Tensor, scores: torch.Tensor, ratio: float) -> Payload:
        n = smashed.shape[1]
        n_keep = n - min(n - 1, max(0, round(ratio * n)))
        order = torch.argsort(scores, descending=True, stable=True)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[order[:n_keep]] = True
        values = smashed.detach()[:, mask.to(smashed.device)].reshape(-1)
        return Payload(tuple(smashed.shape), values, channel_mask=mask)

    # ------------------------------------------------------------ state
    def state_dict(self) -> StateDict:
        state = super().state_dict()
        state.update(
            t=torch.tensor(self.t), d_hist=torch.tensor(self.d_hist, dtype=torch.float64),
            d_count=torch.tensor(self.d_count), last_ratio=torch.tensor(self.last_ratio, dtype=torch.float64),
            degenerate_steps=torch.tensor(self.degenerate_steps),
        )
        if self.s_hist is not None:
            state["s_hist"] = self.s_hist.clone()
        return state

    def load_state_dict(self, state: StateDict) -> None:
        super().load_state_dict(state)
        self.t, self.d_count = int(state["t"]), int(state["d_count"])
        self.d_hist, self.last_ratio = float(state["d_hist"]), float(state["last_ratio"])
        self.degenerate_steps = int(state["degenerate_steps"])
        self.s_hist = state["s_hist"].clone().double() if "s_hist" in state else None

    def eval_state(self) -> StateDict:
        state = {"last_ratio": torch.tensor(self.last_ratio, dtype=torch.float64)}
        if self.s_hist is not None:
            state["s_hist"] = self.s_hist.clone()
        return state

    def load_eval_state(self, state: StateDict) -> None:
        if "last_ratio" in state:
            self.last_ratio = float(state["last_ratio"])
        if "s_hist" in state:
            self.s_hist = state["s_hist"].clone().double()
