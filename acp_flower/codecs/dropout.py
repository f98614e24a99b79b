"""Random activation dropout at the cut (lightweight FedSL, arXiv 2412.06414), after any codec.

Not a codec of its own: a stage on the up-link that composes with whichever codec is
selected (``act_dropout = 0.5`` with ``codec = "quantize"`` drops half of the quantization
codes). Only the kept values travel, with the 64-bit seed of the mask (``wire.Dropout``);
the gradient comes back on the same elements. Inference sends everything (as
``nn.Dropout`` in eval mode): with ``act_dropout_rescale`` the training-time values are
scaled by 1/(1-p) so that both have the same expectation.
"""

from __future__ import annotations

from dataclasses import dataclass

from acp_flower.options import check, declare_options
from acp_flower.seeds import derive_seed
from acp_flower.wire import Dropout, Payload, drop


@dataclass(frozen=True)
class ActivationDropoutOptions:
    """Options of activation dropout (in effect with every codec)."""

    act_dropout: float = 0.0
    """Probability that a smashed-data value the codec would send is dropped (0 = off)."""
    act_dropout_rescale: bool = True
    """Scale the kept values (and their gradients) by 1 / (1 - act_dropout)."""

    def __post_init__(self) -> None:
        check("act_dropout", 0.0 <= self.act_dropout < 1.0, "a probability in [0, 1)")


declare_options(ActivationDropoutOptions, name="act_dropout")


class ActivationDropout:
    """The client-side stage: a seeded mask per training batch.

    The mask of batch ``step`` of a client's round is drawn from (seed, client, round,
    step) alone, so a replayed round (the ``flower`` transport) or a resumed run draws the
    same masks without any saved state.
    """

    def __init__(self, options: ActivationDropoutOptions, seed: int, client_id: int) -> None:
        self.p, self.rescale = options.act_dropout, options.act_dropout_rescale
        self.seed, self.client_id = seed, client_id

    def __call__(self, payload: Payload, server_round: int, step: int) -> Payload:
        if self.p == 0.0:
            return payload
        mask_seed = derive_seed(self.seed, 9, self.client_id, server_round, step)
        return drop(payload, Dropout(mask_seed, self.p, self.rescale))
