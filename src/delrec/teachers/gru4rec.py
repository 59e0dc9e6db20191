"""GRU4Rec (Hidasi et al. 2016; the RecBole variant trained with full softmax): a GRU over the history.

Embedding dropout -> one GRU layer of width 2*hidden -> linear back to the embedding width; score = state .
item embedding (tied). Left-padded rows are right-aligned first, so padding never enters the recurrence.
"""

from __future__ import annotations

import torch
from torch import nn

from delrec.teachers.base import SequentialRecommender


class GRU4Rec(SequentialRecommender):
    name = "gru4rec"
    causal = True

    def __init__(self, n_items: int, cfg):
        super().__init__(n_items, cfg.max_len)
        H = cfg.hidden
        self.item_emb = nn.Embedding(n_items + 1, H, padding_idx=0)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(H, 2 * H, num_layers=1, batch_first=True, bias=False)
        self.out = nn.Linear(2 * H, H)
        nn.init.xavier_normal_(self.item_emb.weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        for w in self.gru.parameters():
            nn.init.xavier_uniform_(w)

    def encode_all(self, histories: torch.Tensor) -> torch.Tensor:
        L = histories.shape[1]
        ar = torch.arange(L, device=histories.device)[None]
        pad = L - (histories > 0).sum(1, keepdim=True)
        # left padding -> right padding (padding after the items cannot change earlier states), and back
        right = histories.gather(1, (ar + pad) % L)
        states, _ = self.gru(self.drop(self.item_emb(right)))
        states = states.gather(1, ((ar - pad) % L)[:, :, None].expand(-1, -1, states.shape[2]))
        return self.out(states)

    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.item_emb.weight[1:].T
