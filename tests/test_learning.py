"""Stage 2 can learn: lsr-only memorises a small synthetic training set on a tiny random LM.

A test that would fail if the adapters did not train (the scores would not move) or if the cached upper-block
path did not pass gradients to them. Train and score on the same examples: this is about capacity and the
optimisation path, not generalisation.
"""

from __future__ import annotations

import pytest
import torch
from helpers import lsr_examples, tiny_scorer, world

from delrec.config import Stage2Config
from delrec.evaluate import accuracy, score_examples
from delrec.lm.adapters import add_adalora
from delrec.prompts.examples import PromptBuilder
from delrec.stages.finetune import finetune


def _hr1(scorer, examples):
    return accuracy(score_examples(scorer, examples, None, batch_size=8), [e.label for e in examples])


@pytest.mark.parametrize("kind,levers", [("llama", {}), ("llama", {"train_layers": 1, "train_negatives": 3}),
                                         ("gpt2", {"train_layers": 1, "train_negatives": 3})])
def test_lsr_only_overfits_a_small_training_set(tmp_path, kind, levers):
    torch.manual_seed(0)
    ds, split = world()
    builder = PromptBuilder(ds.catalog, ds.domain, "sasrec", 4, 8, list_candidates=False)
    train, _ = lsr_examples(ds, split, builder, soft=False)
    train = train[:12]
    scorer = tiny_scorer(ds, kind)
    before = _hr1(scorer, train)
    cfg = Stage2Config(steps=60, batch_size=6, lr=0.05, warmup=2, eval_every=60, max_eval_examples=12,
                      init_r=8, target_r=4, lora_dropout=0.0, orth_reg_weight=0.1, **levers)
    add_adalora(scorer.backbone, cfg)
    finetune(scorer, None, train, train, cfg, tmp_path, seed=0, metric=accuracy)
    after = _hr1(scorer, train)
    assert before < 0.5, before
    assert after >= 0.9, (before, after)
