"""Deterministic batches: a function of (seed, step, micro-batch, rank), so a resumed run sees the same data."""

from __future__ import annotations

import random
from functools import lru_cache

from delrec import DelrecError, dist


@lru_cache(maxsize=64)
def _perm(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return tuple(order)


def batch_indices(n: int, batch_size: int, step: int, micro: int, accum: int, seed: int) -> list[int]:
    """This process's share of micro-batch `micro` of optimiser step `step`, epoch by epoch without repeats.

    `batch_size` is global: under N processes each takes batch_size // N rows of the same global batch, so a
    multi-process run sees exactly the data of a single-process run.
    """
    rank, world = dist.world()
    if batch_size % world:
        raise DelrecError(f"batch_size {batch_size} is not divisible by the {world} processes")
    per_rank = batch_size // world
    start = (step * accum + micro) * batch_size + rank * per_rank
    out = []
    for k in range(start, start + per_rank):
        out.append(_perm(n, seed, k // n)[k % n])
    return out
