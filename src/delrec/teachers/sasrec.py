"""SASRec (Kang & McAuley 2018): causal self-attention over the history; score = last state . item embedding.

Same shape as RecBole's SASRec (learned absolute positions counted from the oldest item of the history, GELU
feed-forward of width 4*hidden, LayerNorm eps 1e-12, N(0, 0.02) init, tied output), with a pre-LayerNorm
option. Causal: the state at position j depends only on items up to j, so one pass over a window scores every
prefix of it exactly as a separate call on that prefix would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from delrec import DelrecError
from delrec.teachers.base import SequentialRecommender


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise DelrecError(f"teacher.hidden ({hidden}) must be divisible by teacher.heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, H = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, L, H))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = SelfAttention(hidden, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.ln1, self.ln2 = nn.LayerNorm(hidden, eps=1e-12), nn.LayerNorm(hidden, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attn(self.ln1(x), mask))
            return x + self.drop(self.mlp(self.ln2(x)))
        x = self.ln1(x + self.drop(self.attn(x, mask)))
        return self.ln2(x + self.drop(self.mlp(x)))


class SASRec(SequentialRecommender):
    name = "sasrec"
    causal = True

    def __init__(self, n_items: int, cfg):
        super().__init__(n_items, cfg.max_len)
        H = cfg.hidden
        self.item_emb = nn.Embedding(n_items + 1, H, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, H)
        self.emb_ln = nn.LayerNorm(H, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(H, cfg.heads, cfg.dropout, cfg.pre_norm) for _ in range(cfg.layers))
        self.final_ln = nn.LayerNorm(H, eps=1e-12) if cfg.pre_norm else nn.Identity()
        self.apply(_init)

    def encode_all(self, histories: torch.Tensor) -> torch.Tensor:
        L = histories.shape[1]
        dev = histories.device
        valid = histories > 0
        pos = (torch.arange(L, device=dev)[None] - (L - valid.sum(1, keepdim=True))).clamp(min=0)
        x = self.drop(self.emb_ln(self.item_emb(histories) + self.pos_emb(pos)))
        causal = torch.ones(L, L, dtype=torch.bool, device=dev).tril()
        # attend to earlier real items; every query also sees itself, so padding rows never go all -inf
        mask = (causal & valid[:, None, :]) | torch.eye(L, dtype=torch.bool, device=dev)
        mask = mask[:, None]  # [B, 1, L, L], broadcast over heads
        for block in self.blocks:
            x = block(x, mask)
        return self.final_ln(x)

    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.item_emb.weight[1:].T


def _init(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)
    if isinstance(m, nn.Embedding) and m.padding_idx is not None:
        nn.init.zeros_(m.weight[m.padding_idx])
