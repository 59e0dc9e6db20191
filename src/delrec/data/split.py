"""Evaluation protocols (docs/method.md §1): leave-one-out (default), the paper's user-split (8:1:1), or the
data's own split."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from delrec import DelrecError
from delrec.choices import PROTOCOLS
from delrec.data.sequences import Dataset


@dataclass(frozen=True)
class Example:
    """One next-item prediction: a user's history (dense ids, oldest first) and the item that followed."""

    user: int
    history: tuple[int, ...]
    target: int


@dataclass
class Split:
    protocol: str
    train_sequences: list[list[int]]  # what models may train on; never holds a valid/test target position
    train_users: list[int]
    valid: list[Example]
    test: list[Example]
    train: list[Example] = field(default_factory=list)  # LM-stage training examples (prefixes of train_sequences)


def make_split(
    dataset: Dataset,
    protocol: str = "leave-one-out",
    *,
    seed: int = 42,
    max_train_examples: int = 2000,
    min_history: int = 3,
    train_examples_per_user: int = 1,
) -> Split:
    if protocol not in PROTOCOLS:
        raise DelrecError(f"data.protocol: unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    seqs = dataset.sequences
    if protocol == "leave-one-out":
        for u, s in enumerate(seqs):
            if len(s) < 3:
                raise DelrecError(f"{dataset.name}: user {dataset.users[u]!r} has {len(s)} interactions; "
                                  "leave-one-out needs at least 3")
        train_users = list(range(len(seqs)))
        train_sequences = [list(s[:-2]) for s in seqs]
        valid = [Example(u, tuple(s[:-2]), s[-2]) for u, s in enumerate(seqs)]
        test = [Example(u, tuple(s[:-1]), s[-1]) for u, s in enumerate(seqs)]
    elif protocol == "predefined":
        train_users, valid, test = _predefined(dataset)
        train_sequences = [list(seqs[u]) for u in train_users]
    else:
        order = list(range(len(seqs)))
        random.Random(seed).shuffle(order)
        n_train = int(len(order) * 0.8)
        n_valid = int(len(order) * 0.1)
        train_users = sorted(order[:n_train])
        valid_users = sorted(order[n_train:n_train + n_valid])
        test_users = sorted(order[n_train + n_valid:])
        train_sequences = [list(seqs[u]) for u in train_users]
        valid = [Example(u, tuple(seqs[u][:-1]), seqs[u][-1]) for u in valid_users]
        test = [Example(u, tuple(seqs[u][:-1]), seqs[u][-1]) for u in test_users]
    split = Split(protocol, train_sequences, train_users, valid, test)
    split.train = sample_train_examples(split, seed=seed, cap=max_train_examples, min_history=min_history,
                                        per_user=train_examples_per_user)
    return split


def _predefined(dataset: Dataset) -> tuple[list[int], list[Example], list[Example]]:
    """The split shipped with the data (LLaRA's train/val/test rows): each valid/test user is one example."""
    pre = dataset.predefined or {}
    missing = [k for k in ("train", "valid", "test") if not pre.get(k)]
    if missing:
        raise DelrecError(f"{dataset.name}: data.protocol 'predefined' needs the dataset's own train/valid/test "
                          f"split, but it has no {'/'.join(missing)} rows; add those files or use leave-one-out "
                          "or user-split")
    seqs = dataset.sequences
    ex = {k: [Example(u, tuple(seqs[u][:-1]), seqs[u][-1]) for u in sorted(pre[k])] for k in ("valid", "test")}
    return sorted(pre["train"]), ex["valid"], ex["test"]


def sample_train_examples(split: Split, *, seed: int, cap: int, min_history: int, per_user: int) -> list[Example]:
    """LM training examples: (prefix, next item) pairs from training sequences, latest positions first.

    Each user contributes up to `per_user` of their latest prefixes (closest in time to evaluation); the
    pool is then subsampled to `cap` with `seed`.
    """
    rng = random.Random(seed + 1)
    pool = []
    for user, seq in zip(split.train_users, split.train_sequences):
        for t in range(len(seq) - 1, max(min_history - 1, len(seq) - 1 - per_user), -1):
            if t >= min_history:
                pool.append(Example(user, tuple(seq[:t]), seq[t]))
    if cap and len(pool) > cap:
        pool = rng.sample(pool, cap)
        pool.sort(key=lambda e: (e.user, len(e.history)))
    return pool


def before_training_targets(split: Split) -> Split:
    """The split with each training sequence cut before the earliest target of its user's LM training
    examples: a teacher trained on it has never seen those targets, so its view of a training example is as
    unknowing as the full teacher's view of a validation or test example (the hint of `delrec+hint`)."""
    first = {}
    for e in split.train:
        first[e.user] = min(first.get(e.user, len(e.history)), len(e.history))
    cut = [list(seq[:first.get(u, len(seq))]) for u, seq in zip(split.train_users, split.train_sequences)]
    return dataclasses.replace(split, train_sequences=cut)
