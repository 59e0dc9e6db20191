"""Popularity: score = how often the item occurs in the training sequences (never a valid/test target).

Equal counts are broken by dense id (lower first), so the baseline is deterministic and not penalised by the
pessimistic tie rule of the metrics.
"""

from __future__ import annotations

import torch

from delrec.teachers.base import SequentialRecommender


class Popularity(SequentialRecommender):
    name = "popularity"
    trainable = False

    def __init__(self, n_items: int, cfg=None):
        super().__init__(n_items, getattr(cfg, "max_len", 50))
        self.register_buffer("counts", torch.zeros(n_items))

    def fit(self, train_sequences) -> Popularity:
        counts = torch.zeros(self.n_items, dtype=torch.float64)
        for seq in train_sequences:
            counts += torch.bincount(torch.as_tensor(seq, dtype=torch.long), minlength=self.n_items).double()
        self.counts.copy_(counts.float())
        return self

    def forward(self, histories: torch.Tensor) -> torch.Tensor:
        tiebreak = 1.0 - torch.arange(self.n_items, device=self.counts.device) / self.n_items
        return (self.counts + 0.5 * tiebreak).expand(histories.shape[0], -1)
