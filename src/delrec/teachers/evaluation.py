"""Teacher metrics: candidate HR@k / NDCG@k on the shared candidate files, and full-catalogue ranking."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from delrec.data.candidates import CandidateSet
from delrec.data.split import Example
from delrec.metrics import ndcg_hr_full, ranks_from_scores, summarize
from delrec.teachers.teacher import Teacher


def full_ranks(teacher: Teacher, histories, targets, *, batch_size: int = 512) -> np.ndarray:
    """1-based rank of each target over the whole catalogue, history items excluded, ties pessimistic."""
    ranks, start = [], 0
    for s in teacher.score_batches(list(histories), True, batch_size):
        t = torch.as_tensor(targets[start:start + len(s)], device=s.device)
        ranks.append((s >= s.gather(1, t[:, None])).sum(1).cpu().numpy())
        start += len(s)
    return np.concatenate(ranks) if ranks else np.zeros(0, np.int64)


def candidate_scores(teacher: Teacher, sets: list[CandidateSet], *, batch_size: int = 512) -> np.ndarray:
    """[N, C] scores of each set's candidates, in the set's order (what the LM rows' test_scores.npy hold)."""
    scores = teacher.scores([c.history for c in sets], batch_size=batch_size)
    return scores.gather(1, torch.tensor([c.candidates for c in sets], dtype=torch.long)).numpy()


def candidate_ranks(teacher: Teacher, sets: list[CandidateSet], *, batch_size: int = 512) -> np.ndarray:
    return ranks_from_scores(candidate_scores(teacher, sets, batch_size=batch_size), [c.target_index for c in sets])


def evaluate_teacher(teacher: Teacher, examples: Sequence[Example] | None = None,
                     candidates: list[CandidateSet] | None = None, *, n_boot: int = 1000) -> dict:
    """Row for metrics.json: candidate HR@1/HR@5/NDCG@5 (+n, ci95) and full-ranking `full/hr@10`, `full/ndcg@10`.
    Full ranking uses `examples`, or the candidate sets' (history, target) when `examples` is None."""
    row: dict = {}
    if candidates:
        row.update(summarize(candidate_ranks(teacher, candidates), n_boot=n_boot))
    pairs = examples if examples is not None else candidates or []
    if pairs:
        row.update(ndcg_hr_full(full_ranks(teacher, [e.history for e in pairs], [e.target for e in pairs])))
    return row


def full_ndcg10(teacher: Teacher, examples: Sequence[Example]) -> float:
    """Full-ranking NDCG@10 over `examples`: what teacher training selects epochs by."""
    return ndcg_hr_full(full_ranks(teacher, [e.history for e in examples], [e.target for e in examples]))[
        "full/ndcg@10"]
