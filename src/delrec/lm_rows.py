"""How a run builds and scores its methods: the split, the prompts, the LM, the teacher's hints and the test
row of an LM method on any candidate sets. `delrec run` (pipeline) trains with them; `delrec evaluate` and
`delrec recommend` (recommend) reuse them on a finished run, so a run's own test file scores the same there.
"""

from __future__ import annotations

import dataclasses
import random

from delrec.config import RunConfig
from delrec.data.candidates import CandidateSet
from delrec.data.sequences import Dataset
from delrec.data.split import Split, make_split
from delrec.evaluate import metric_row, score_examples
from delrec.prompts.examples import PromptBuilder


def build_split(cfg: RunConfig, dataset: Dataset) -> Split:
    """The run's split (seeded by data.seed), valid/test subsampled to data.max_eval_examples."""
    split = make_split(dataset, cfg.data.protocol, seed=cfg.data.seed, max_train_examples=cfg.data.max_train_examples,
                       train_examples_per_user=cfg.data.train_examples_per_user)
    if cfg.data.max_eval_examples:
        rng = random.Random(cfg.data.seed + 7)
        for name in ("valid", "test"):
            rows = getattr(split, name)
            if len(rows) > cfg.data.max_eval_examples:
                setattr(split, name, sorted(rng.sample(rows, cfg.data.max_eval_examples), key=lambda e: e.user))
    return split


def prompt_builder(cfg: RunConfig, dataset: Dataset) -> PromptBuilder:
    """The prompts of a run: its dataset's titles and domain, the distilled teacher, the configured history
    length, candidate count and scorer (index-letter lists candidates as letters)."""
    return PromptBuilder(dataset.catalog, dataset.domain, cfg.teacher.models[0], cfg.data.max_history,
                         cfg.data.n_candidates, cfg.lm.scorer == "index-letter", cfg.lm.list_candidates,
                         cfg.lm.title_years)


def stage1_builder(cfg: RunConfig, dataset: Dataset) -> PromptBuilder:
    """The TA/RPS prompts: the run's prompts with stage1.max_history history titles (when set)."""
    builder = prompt_builder(cfg, dataset)
    return dataclasses.replace(builder, max_history=cfg.stage1.max_history) if cfg.stage1.max_history else builder


def new_lm(cfg: RunConfig):
    from delrec.lm.backbone import load_backbone
    from delrec.lm.scoring import scorer_from_config

    return scorer_from_config(load_backbone(cfg.lm), cfg.lm)


def lsr_examples(cfg: RunConfig, builder: PromptBuilder, sets: list[CandidateSet], soft: bool,
                 hint_teacher=None, slots: bool = False, prior_teacher=None) -> list:
    """LSR prompts for candidate sets; with a teacher, its ranking of each example's candidates goes into the
    prompt (delrec+hint); with `slots`, an item vector's place after each history title (delrec+hybrid);
    with a `prior_teacher`, each example carries that teacher's log-probabilities of its candidates, which
    its LM scores are added to (delrec+residual)."""
    hints = candidate_hints(hint_teacher, sets, cfg.eval.hint_k) if hint_teacher else [None] * len(sets)
    out = [builder.lsr(c, soft=soft, hint=h, slots=slots) for c, h in zip(sets, hints)]
    if prior_teacher is not None:
        out = [dataclasses.replace(e, prior=p) for e, p in zip(out, candidate_priors(prior_teacher, sets))]
    return out


def candidate_priors(teacher, sets: list[CandidateSet], chunk: int = 512) -> list[tuple[float, ...]]:
    """The teacher's log-probability of each candidate among the example's own candidates (a softmax of its
    scores over them): a prior on the scale of a cross-entropy-trained teacher, so the LM trained on top of it
    learns what to add to the teacher, not to redo it (CoReLLa, arXiv 2403.16378: the LM is most useful where
    the conventional model is unsure)."""
    import torch

    out = []
    for lo in range(0, len(sets), chunk):
        part = sets[lo:lo + chunk]
        scores = teacher.scores([c.history for c in part])
        for c, s in zip(part, scores):
            logp = torch.log_softmax(s[list(c.candidates)].double(), dim=0)
            out.append(tuple(round(float(x), 6) for x in logp))
    return out


def candidate_hints(teacher, sets: list[CandidateSet], k: int, chunk: int = 512) -> list[list[int]]:
    """The teacher's top k of each example's own candidates, best first. Its global top-k (the paper's view of
    the teacher) mostly misses the 20 candidates, so it tells the LM little about the choice at hand."""
    out = []
    for lo in range(0, len(sets), chunk):
        part = sets[lo:lo + chunk]
        scores = teacher.scores([c.history for c in part])
        for c, s in zip(part, scores):
            cands = list(c.candidates)
            ranked = sorted(range(len(cands)), key=lambda j: (-float(s[cands[j]]), j))
            out.append([cands[j] for j in ranked[:k]])
    return out


def set_users(teacher, sets: list[CandidateSet]):
    """[N, d] the teacher's state of each candidate set's history: what delrec+user's projector reads."""
    from delrec.lm.teacher_prompts import user_states

    return user_states(teacher, [c.history for c in sets])


def lm_test_row(cfg: RunConfig, builder: PromptBuilder, scorer, soft, sets: list[CandidateSet], method: str,
                hint_teacher=None, user_teacher=None, slots: bool = False, prior_teacher=None) -> dict:
    """Metric row, with its "scores", of an LM method on candidate sets (the run's test file or any other);
    with eval.order_robust also scored in the reversed candidate order and the two averaged. With
    `user_teacher`, `soft` is a per-user prompt (delrec+user) fed that teacher's state of each history; a
    hybrid row's prompts hold item `slots` (its `soft` makes their vectors); a residual row's scores are its
    LM's plus `prior_teacher`'s log-probabilities."""
    def examples(part):
        return lsr_examples(cfg, builder, part, soft is not None, hint_teacher, slots, prior_teacher)

    ex = examples(sets)
    users = set_users(user_teacher, sets) if user_teacher is not None else None
    scores = score_examples(scorer, ex, soft, batch_size=cfg.eval.batch_size, desc=f"test {method}", users=users)
    if cfg.eval.order_robust:
        rev_sets = [CandidateSet(c.user, c.history, c.candidates[::-1], c.target) for c in sets]
        rev = score_examples(scorer, examples(rev_sets), soft, batch_size=cfg.eval.batch_size, users=users)
        scores = 0.5 * (scores + rev[:, ::-1])
    return metric_row(scores, [e.label for e in ex], n_boot=cfg.eval.bootstrap) | {"scores": scores}


def zero_shot_row(cfg: RunConfig, dataset: Dataset, sets: list[CandidateSet], method: str) -> dict:
    """Metric row of the untrained LM (no adapter, no soft prompt) on candidate sets."""
    row = lm_test_row(cfg, prompt_builder(cfg, dataset), new_lm(cfg), None, sets, method)
    row.pop("scores")
    return row
