"""Seeded candidate sets (target + uniform negatives outside the history), persisted as JSONL + .meta.json.

Every method is scored on the same files (docs/method.md §1).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from delrec import DelrecError
from delrec.data.sequences import Dataset
from delrec.data.split import Example
from delrec.io import atomic_write_text

SAMPLER = "uniform-without-replacement-outside-full-history"


@dataclass(frozen=True)
class CandidateSet:
    """An example with its candidates (dense ids). `history` is the full history; prompts use its tail."""

    user: int
    history: tuple[int, ...]
    candidates: tuple[int, ...]
    target: int

    @property
    def target_index(self) -> int:
        return self.candidates.index(self.target)


def sample_negatives(rng: random.Random, n_items: int, exclude: set[int], k: int) -> list[int]:
    if n_items - len(exclude) < k:
        raise DelrecError(f"cannot draw {k} negatives: only {n_items - len(exclude)} items outside the history")
    if len(exclude) * 4 < n_items:  # rejection is fast and exact when few items are excluded
        out: list[int] = []
        seen = set(exclude)
        while len(out) < k:
            x = rng.randrange(n_items)
            if x not in seen:
                seen.add(x)
                out.append(x)
        return out
    return rng.sample([i for i in range(n_items) if i not in exclude], k)


def make_candidates(dataset: Dataset, examples: list[Example], *, n_candidates: int = 20, seed: int = 0
                    ) -> list[CandidateSet]:
    """Target + (n-1) negatives never in the user's full sequence, shuffled; deterministic for a seed."""
    rng = random.Random(seed)
    out = []
    for ex in examples:
        exclude = set(dataset.sequences[ex.user]) | set(ex.history) | {ex.target}
        cands = [ex.target] + sample_negatives(rng, dataset.n_items, exclude, n_candidates - 1)
        rng.shuffle(cands)
        out.append(CandidateSet(ex.user, ex.history, tuple(cands), ex.target))
    return out


def write_candidates(path: str | os.PathLike, dataset: Dataset, sets: list[CandidateSet], *, seed: int,
                     protocol: str, split: str) -> None:
    raw = dataset.catalog.raw_ids
    lines = [json.dumps({"user": dataset.users[c.user], "history": [raw[i] for i in c.history],
                         "candidates": [raw[i] for i in c.candidates], "target": raw[c.target]})
             for c in sets]
    meta = {"seed": seed, "sampler": SAMPLER, "protocol": protocol, "split": split, "dataset": dataset.name,
            "fingerprint": dataset.fingerprint(), "count": len(sets),
            "n_candidates": len(sets[0].candidates) if sets else 0}
    atomic_write_text(path, "\n".join(lines) + "\n")
    atomic_write_text(str(path) + ".meta.json", json.dumps(meta, indent=2) + "\n")


def read_candidates(path: str | os.PathLike, dataset: Dataset, *, check_fingerprint: bool = True
                    ) -> list[CandidateSet]:
    """Read a candidate JSONL (raw ids). Files made outside delrec need no .meta.json."""
    path = Path(path)
    if not path.is_file():
        raise DelrecError(f"{path}: candidate file not found" if not path.exists() else
                          f"{path}: not a file; pass a candidate JSONL file")
    meta_path = Path(str(path) + ".meta.json")
    if check_fingerprint and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != dataset.fingerprint():
            raise DelrecError(f"{path}: made for dataset fingerprint {meta.get('fingerprint')}, but the loaded "
                              f"dataset has {dataset.fingerprint()}; regenerate the candidates")
    user_index = {u: i for i, u in enumerate(dataset.users)}
    cat = dataset.catalog
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                ids = [row["target"], *row["candidates"], *row["history"]]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DelrecError(f"{path}:{n}: malformed candidate row ({e})") from None
            for raw in ids:
                if str(raw) not in cat:
                    raise DelrecError(f"{path}:{n}: item {raw!r} is not in dataset {dataset.name}")
            cands = tuple(cat.dense(x) for x in row["candidates"])
            target = cat.dense(row["target"])
            if cands.count(target) != 1:
                raise DelrecError(f"{path}:{n}: the target must appear exactly once among the candidates")
            user = user_index.get(str(row.get("user")), -1)
            out.append(CandidateSet(user, tuple(cat.dense(x) for x in row["history"]), cands, target))
    if not out:
        raise DelrecError(f"{path}: no candidate rows")
    return out
