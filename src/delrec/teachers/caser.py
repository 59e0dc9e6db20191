"""Caser (Tang & Wang 2018): horizontal and vertical convolutions over the last `window` item embeddings.

Horizontal filters of every height 1..window (n_h each, ReLU, max-pooled over time) catch union-level and
skip patterns; n_v vertical filters (window x 1) weight the recent items point-wise. Their concatenation ->
dropout -> linear -> ReLU gives z; score(item) = z . W'_item + b'_item, with a separate output table W' and
bias b' as in the paper. The paper's user embedding P_u is omitted: the interface sees histories, not user
ids, and the user-split protocol tests users never seen in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from delrec.teachers.base import SequentialRecommender


class Caser(SequentialRecommender):
    name = "caser"

    def __init__(self, n_items: int, cfg):
        super().__init__(n_items, cfg.caser_window)  # Caser reads only the last `caser_window` items
        d, L = cfg.hidden, cfg.caser_window
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.horizontal = nn.ModuleList(nn.Conv2d(1, cfg.caser_h, (h, d)) for h in range(1, L + 1))
        self.vertical = nn.Conv2d(1, cfg.caser_v, (L, 1))
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(cfg.caser_v * d + cfg.caser_h * L, d)
        self.out_emb = nn.Embedding(n_items, d)
        self.out_bias = nn.Parameter(torch.zeros(n_items))
        nn.init.normal_(self.item_emb.weight, std=1.0 / d)
        nn.init.normal_(self.out_emb.weight, std=1.0 / d)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, histories: torch.Tensor) -> torch.Tensor:
        h = histories[:, -self.max_len:]
        if h.shape[1] < self.max_len:  # short batch: left-pad to the window
            h = F.pad(h, (self.max_len - h.shape[1], 0))
        E = self.item_emb(h).unsqueeze(1)  # [B, 1, L, d]
        o_v = self.vertical(E).flatten(1)  # [B, n_v * d]
        o_h = [F.relu(conv(E).squeeze(3)).amax(2) for conv in self.horizontal]  # each [B, n_h]
        return F.relu(self.fc(self.drop(torch.cat([o_v, *o_h], 1))))

    def item_vectors(self) -> torch.Tensor:
        return self.out_emb.weight  # Caser scores with its own output table, not its input one

    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.out_emb.weight.T + self.out_bias
