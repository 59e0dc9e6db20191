"""Deterministic batches: a function of (seed, step, micro-batch, rank), so a resumed run sees the same data."""

from __future__ import annotations

import dataclasses
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


def example_rng(seed: int, step: int, micro: int, index: int) -> random.Random:
    """The draw source of training example `index` in micro-batch `micro` of step `step`: the same draw
    whichever process takes the example (so N processes train on exactly the rows of one) and after --resume."""
    return random.Random(((seed * 1_000_003 + step) * 1_009 + micro) * 1_000_033 + index)


def sampled_batch(examples, idx, m: int, seed: int, step: int, micro: int) -> list:
    """Rows `idx` of `examples`, each on its target and `m` of its other candidates (all when m is 0)."""
    return [with_sampled_negatives(examples[j], m, example_rng(seed, step, micro, j)) for j in idx]


def with_sampled_negatives(example, m: int, rng: random.Random):
    """The example scored on its target and `m` of its other candidates (in their original order).

    Training only (`stage*.train_negatives`): title scorers score each title on its own, so the cross-entropy
    over the kept candidates is a sampled-softmax estimate of the full one at about (m + 1) / C of the title
    tokens; validation and test always score every candidate."""
    n = len(example.candidates)
    if m <= 0 or m >= n - 1:
        return example
    others = [i for i in range(n) if i != example.label]
    keep = sorted(rng.sample(others, m) + [example.label])
    prior = tuple(example.prior[i] for i in keep) if example.prior else ()
    return dataclasses.replace(example, candidates=tuple(example.candidates[i] for i in keep),
                               items=tuple(example.items[i] for i in keep), label=keep.index(example.label),
                               prior=prior)
