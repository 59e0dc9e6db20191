"""Score prompt examples with an LM (sharded across processes) and turn scores into metric rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from delrec import DelrecError, dist
from delrec.metrics import per_example, ranks_from_scores, summarize

if TYPE_CHECKING:
    from delrec.lm.backbone import Backbone
    from delrec.lm.soft_prompt import SoftPrompt
    from delrec.prompts.examples import PromptExample


class Scorer(Protocol):
    """What evaluation and both training stages need from an LM scorer (`lm.scoring.CandidateScorer`): the
    backbone it runs (stage 2 wraps its model in AdaLoRA) and [B, C] candidate scores, differentiable w.r.t.
    the soft prompt and any trainable adapter."""

    backbone: Backbone

    def score(self, prompts: list[str], candidates: list[list[str]], soft_prompt: SoftPrompt | None = None
              ) -> torch.Tensor: ...


@torch.no_grad()
def score_examples(scorer: Scorer, examples: Sequence[PromptExample], soft_prompt: SoftPrompt | None = None,
                   *, batch_size: int = 8, desc: str = "scoring", users: torch.Tensor | None = None) -> np.ndarray:
    """[N, C] candidate scores; each process scores every world-th example, results are gathered. With
    `users` ([N, d] user states), `soft_prompt` is a per-user prompt (lm/teacher_prompts.py) and example i gets
    the soft vectors of users[i]; a prompt with `for_examples` (delrec+hybrid) makes each batch's vectors."""
    if users is not None and len(users) != len(examples):
        raise DelrecError(f"scoring: {len(users)} user states for {len(examples)} examples")
    rank, world = dist.world()
    mine = list(range(rank, len(examples), world))
    rows: list = []
    for start in tqdm(range(0, len(mine), batch_size), desc=desc, disable=not dist.is_main() or len(mine) < 50,
                      leave=False):
        idx = mine[start:start + batch_size]
        batch = [examples[i] for i in idx]
        soft = soft_prompt.rows(users[idx]) if users is not None else soft_prompt
        if hasattr(soft_prompt, "for_examples"):
            soft = soft_prompt.for_examples(batch)
        s = with_prior(scorer.score([e.prompt for e in batch], [list(e.candidates) for e in batch], soft), batch)
        rows.extend(s.cpu().numpy())
    rows = dist.gather_rows(rows, len(examples))
    return np.stack(rows) if rows else np.zeros((0, 0))


def with_prior(scores: torch.Tensor, batch: Sequence[PromptExample]) -> torch.Tensor:
    """[B, C] float scores of a batch, plus each example's teacher prior when it carries one (delrec+residual:
    the LM is trained, and scored, as a correction to the teacher's log-probabilities)."""
    scores = scores.float()
    if not batch or not batch[0].prior:
        return scores
    return scores + torch.tensor([e.prior for e in batch], dtype=scores.dtype, device=scores.device)


def metric_row(scores: np.ndarray, labels, *, n_boot: int = 1000) -> dict:
    return summarize(ranks_from_scores(scores, labels), n_boot=n_boot)


class MetricValue(float):
    """A validation metric that says which one it is (`name`), so the training log can name it."""

    name = ""


def _mean_metric(scores: np.ndarray, labels, name: str) -> MetricValue:
    value = MetricValue(per_example(ranks_from_scores(scores, labels))[name].mean() if len(labels) else 0.0)
    value.name = name
    return value


def accuracy(scores: np.ndarray, labels) -> MetricValue:
    """HR@1: the share of examples whose right answer scores highest."""
    return _mean_metric(scores, labels, "hr@1")


def ndcg5(scores: np.ndarray, labels) -> MetricValue:
    return _mean_metric(scores, labels, "ndcg@5")
