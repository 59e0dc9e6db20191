"""The one interface every teacher implements, and the history padding it expects.

Input convention (RecBole-style): `histories` is a LongTensor [B, L], oldest item first, LEFT-padded with 0,
item ids shifted by +1 so that 0 means padding. Output: one score per item of the catalogue, [B, n_items],
indexed by dense item id 0..n_items-1 (the shift is undone inside the model).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SequentialRecommender(nn.Module):
    """Base class: `forward(histories [B, L]) -> scores [B, n_items]` over the whole catalogue.

    Causal models (`causal = True`: SASRec, GRU4Rec) also implement `encode_all`, the state after every
    position, so training scores every prefix of a window in one pass; the others implement `encode` only.
    """

    name = "base"
    trainable = True
    causal = False

    def __init__(self, n_items: int, max_len: int):
        super().__init__()
        self.n_items = n_items
        self.max_len = max_len

    def encode_all(self, histories: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, L, H]: position j holds the representation of the history histories[:, :j+1]."""
        raise NotImplementedError(f"{self.name} is not a causal sequence model")

    def encode(self, histories: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, H], the representation of the whole (left-padded) history."""
        return self.encode_all(histories[:, -self.max_len:])[:, -1]

    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., H] -> [..., n_items]."""
        raise NotImplementedError

    def item_vectors(self) -> torch.Tensor:
        """[n_items, H] the vector each item is scored with (`score` is hidden @ item_vectors().T, plus any
        bias): what delrec+hybrid's projector reads."""
        return self.item_emb.weight[1:]

    def forward(self, histories: torch.Tensor) -> torch.Tensor:
        return self.score(self.encode(histories))


def pad_histories(histories: Sequence[Sequence[int]], max_len: int, device=None) -> torch.Tensor:
    """Dense-id histories (oldest first) -> LongTensor [N, max_len]: last `max_len` items, +1 shift, left pad 0.

    An empty history becomes an all-padding row; models treat it as "no information".
    """
    out = torch.zeros(len(histories), max_len, dtype=torch.long)
    for row, h in enumerate(histories):
        tail = list(h)[-max_len:] if max_len else []
        if tail:
            out[row, max_len - len(tail):] = torch.as_tensor(tail, dtype=torch.long) + 1
    return out if device is None else out.to(device)


def history_mask(histories: Sequence[Sequence[int]], n_items: int, device=None) -> torch.Tensor:
    """Bool [N, n_items], True where the item occurs anywhere in the row's (full, untruncated) history."""
    rows = [r for r, h in enumerate(histories) for _ in h]
    cols = [i for h in histories for i in h]
    mask = torch.zeros(len(histories), n_items, dtype=torch.bool, device=device)
    if cols:
        mask[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = True
    return mask
