"""The divergence guard: NaN or inf in a loss, the smashed data or a gradient stops that client.

A diverging learning rate shows up as NaN or inf; left alone it silently poisons every
model that averages with it and ends as NaN rows in metrics.csv. The runtimes and
exchanges check each of those tensors before anything is stepped or sent with it
(``check_finite``) and raise ``NonFiniteError``; drivers then apply ``on_client_error``
(``acp_flower.runtime.faults``).
"""

from __future__ import annotations

import torch


class NonFiniteError(FloatingPointError):
    """A loss, smashed-data or gradient tensor holds NaN or inf (the divergence guard).

    ``tensor`` names which one; the message says where (round, client, batch) once the
    client runtime has added it (``at``).
    """

    def __init__(self, message: str, tensor: str = "") -> None:
        super().__init__(message)
        self.tensor = tensor

    def __reduce__(self):  # keep ``tensor`` across processes (Ray pickles exceptions)
        return type(self), (str(self), self.tensor)

    def at(self, server_round: int, client_id: int, batch: int) -> NonFiniteError:
        """The same error with where it happened in front (batch: 0-based upload index of the round)."""
        return NonFiniteError(f"round {server_round}, client {client_id}, batch {batch}: {self}", self.tensor)


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise ``NonFiniteError`` naming ``name`` if ``tensor`` holds NaN or inf."""
    if bool(torch.isfinite(tensor).all()):
        return
    nans, infs = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
    raise NonFiniteError(f"non-finite {name}: {nans} NaN and {infs} inf of {tensor.numel()} values "
                         "(diverged? lower the learning rate)", name)
