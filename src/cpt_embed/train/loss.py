"""The contrastive loss of the paper: symmetric InfoNCE over in-batch negatives with a
learned temperature, optional explicit hard negatives, and embeddings gathered across
processes (train/distributed.py) so that every process sees the global batch.

logits = cos(v_x, v_y) * exp(tau); loss = (CE over rows + CE over columns) / 2.
Hard negatives are extra columns of the rows (negatives for every x), not extra rows.
Pairs that share an identical x or y text mask each other (they are not negatives).
With `false_negative_margin` set, the model itself guides (GISTEmbed's idea, the model as
its own guide): a negative it scores above the positive minus the margin (in cosine) is
taken for an unlabeled positive and masked too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cpt_embed.train.config import TAU_INIT, TAU_MAX
from cpt_embed.train.distributed import gather, scale_grad_by_world


class ContrastiveLoss(nn.Module):
    """Symmetric in-batch contrastive loss with learned (or fixed) temperature."""

    def __init__(
        self,
        tau_init: float = TAU_INIT,
        tau_max: float = TAU_MAX,
        learn_tau: bool = True,
        false_negative_margin: float | None = None,
    ) -> None:
        super().__init__()
        self.tau = nn.Parameter(torch.tensor(float(tau_init)), requires_grad=learn_tau)
        self.tau_max = tau_max
        self.false_negative_margin = false_negative_margin

    @property
    def scale(self) -> torch.Tensor:
        """exp(tau), after the clamp."""
        return self.tau.clamp(max=self.tau_max).exp()

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        negatives: torch.Tensor | None = None,
        x_keys: torch.Tensor | None = None,
        y_keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of the local pairs (x[i], y[i]) against the global batch.

        x, y: (n, dim) local embeddings; negatives: (n * k, dim) hard negative documents;
        x_keys, y_keys: (n,) integer ids of the texts, equal for identical texts, used to
        mask pairs that are not really negatives of each other.
        """
        x = F.normalize(scale_grad_by_world(x), dim=-1)
        y = F.normalize(scale_grad_by_world(y), dim=-1)
        all_x, all_y = gather(x), gather(y)
        columns = all_y
        if negatives is not None and len(negatives):
            negatives = F.normalize(scale_grad_by_world(negatives), dim=-1)
            columns = torch.cat([all_y, gather(negatives)])
        scale = self.scale
        rows = scale * all_x @ columns.T  # (M, M + negatives)
        cols = scale * all_y @ all_x.T  # (M, M)
        m = len(all_x)
        if x_keys is not None and y_keys is not None:
            keys_x, keys_y = gather(x_keys), gather(y_keys)
            same = (keys_x[:, None] == keys_x[None, :]) | (keys_y[:, None] == keys_y[None, :])
            same.fill_diagonal_(False)
            rows[:, :m] = rows[:, :m].masked_fill(same, float("-inf"))
            cols = cols.masked_fill(same, float("-inf"))
        if self.false_negative_margin is not None:
            rows = rows.masked_fill(self._suspects(rows.detach() / scale), float("-inf"))
            cols = cols.masked_fill(self._suspects(cols.detach() / scale), float("-inf"))
        target = torch.arange(m, device=x.device)
        return (F.cross_entropy(rows, target) + F.cross_entropy(cols, target)) / 2

    def _suspects(self, cosines: torch.Tensor) -> torch.Tensor:
        """Negatives scored above their row's positive (cosines[i, i]) minus the margin."""
        m = len(cosines)
        positive = cosines[:, :m].diagonal()
        suspect = cosines > (positive - self.false_negative_margin)[:, None]
        suspect[:, :m].fill_diagonal_(False)
        return suspect
