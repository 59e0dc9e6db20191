"""Training-cost levers: adapters on the top blocks, cached lower-block states, sampled negatives."""

import random

import pytest
import torch

from delrec import DelrecError
from delrec.config import Stage2Config
from delrec.lm.adapters import add_adalora, first_adapted_block, trainable_params
from delrec.lm.backbone import tiny_backbone
from delrec.lm.layer_cache import UpperLayerScorer
from delrec.lm.scoring import CandidateScorer
from delrec.prompts import templates as T
from delrec.prompts.examples import PromptExample
from delrec.stages.batches import with_sampled_negatives

HIST = ["Star Quest 1", "Star Quest 2", "Dragon Saga 1", "Dragon Saga 2", "Heist Files 3 (1997)", "Comet Club 2"]
CANDS = [["Star Quest 3", "Dragon Saga 3", "Noodle Nights 1 (1995)", "Crypt Tales 2", "Goal Legacy 4"],
         ["Banana Tales 3", "Wizard Files 1", "Fog Club 2 (2001)", "Orbit Saga 1", "Slam Quest 2"]]
PROMPTS = [T.render_lsr("movie", "SASRec", HIST[:2], [], False, soft=False),
           T.render_lsr("movie", "SASRec", HIST, [], False, soft=False)]


def _adapted(kind, layers=1):
    bb = tiny_backbone(kind)
    model = add_adalora(bb, Stage2Config(steps=10, init_r=4, target_r=2, lora_dropout=0.0, warmup=0,
                                         eval_every=10, train_layers=layers))
    with torch.no_grad():  # AdaLoRA starts as the identity (E = 0); give the adapters an effect to compare
        for name, p in trainable_params(model).items():
            if "lora_E" in name:
                p.normal_(0, 0.5)
    return bb, model


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_adapters_sit_only_on_the_top_blocks(kind):
    _, model = _adapted(kind, layers=1)
    names = list(trainable_params(model))
    assert names and all((".1." in n) for n in names), names  # tiny models have blocks 0 and 1
    assert not any(".0." in n for n in names)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_upper_pass_from_cached_states_equals_the_full_pass(kind):
    bb, model = _adapted(kind)
    scorer = CandidateScorer(bb)
    fast = UpperLayerScorer(scorer, first_adapted_block(bb, 1), dtype=torch.float32)
    s_full = _assert_same_scores_and_grads(model, scorer, fast, PROMPTS, None, torch.tensor([1, 4]))
    assert s_full.std() > 0.05


def _assert_same_scores_and_grads(model, full, fast, prompts, soft, labels) -> torch.Tensor:
    """Scores and adapter gradients of a cross-entropy step agree between the full and the cached pass."""
    out = {}
    for name, s in (("full", full), ("cached", fast)):
        model.zero_grad()
        scores = s.score(prompts, CANDS, soft)
        torch.nn.functional.cross_entropy(scores, labels).backward()
        out[name] = (scores.detach(), {n: p.grad.clone() for n, p in trainable_params(model).items()
                                       if p.grad is not None})
    (s_full, g_full), (s_cached, g_cached) = out["full"], out["cached"]
    assert torch.allclose(s_cached, s_full, atol=1e-4), (s_cached - s_full).abs().max()
    assert g_cached.keys() == g_full.keys() and any(g.abs().sum() > 0 for g in g_full.values())
    for n, g in g_full.items():
        assert torch.allclose(g_cached[n], g, atol=1e-5, rtol=1e-3), n
    return s_full


LETTER_PROMPTS = [T.render_lsr("movie", "SASRec", HIST[:2], CANDS[0], True, soft=True),
                  T.render_lsr("movie", "SASRec", HIST, CANDS[1], True, soft=True)]


@pytest.mark.parametrize("kind,head", [("llama", "index-letter"), ("gpt2", "index-letter"),
                                       ("llama", "first-token")])
def test_one_position_heads_from_cached_prompt_states_equal_the_full_pass(kind, head):
    from delrec.lm.soft_prompt import SoftPrompt

    bb, model = _adapted(kind)
    soft = SoftPrompt.create(3, bb, "vocab", 0).requires_grad_(False)  # frozen, as in delrec stage 2
    scorer = CandidateScorer(bb, kind=head)
    fast = UpperLayerScorer(scorer, first_adapted_block(bb, 1), soft, dtype=torch.float32)
    s_full = _assert_same_scores_and_grads(model, scorer, fast, LETTER_PROMPTS, soft, torch.tensor([2, 0]))
    assert s_full.shape == (2, 5) and s_full.std() > 0.01
    assert fast.lower_rows == 2  # one lower pass per prompt, whatever the candidates
    with torch.no_grad():
        fast.score(LETTER_PROMPTS[::-1], CANDS[::-1], soft)
    assert fast.lower_rows == 2


def test_cached_states_serve_any_subset_of_candidates_and_are_computed_once():
    bb, _ = _adapted("llama")
    scorer = CandidateScorer(bb)
    fast = UpperLayerScorer(scorer, 1)  # bf16 states, the default
    with torch.no_grad():
        full = scorer.score(PROMPTS, CANDS, None)
        cached = fast.score(PROMPTS, CANDS, None)
        assert fast.lower_rows == 10
        subset = fast.score(PROMPTS, [[c[3], c[0]] for c in CANDS], None)
    assert fast.lower_rows == 10  # nothing recomputed
    assert torch.allclose(cached, full, atol=3e-2)
    assert torch.allclose(subset, cached[:, [3, 0]], atol=1e-5)


def test_cache_refuses_a_trainable_soft_prompt_and_bad_layer_counts():
    from delrec.lm.soft_prompt import SoftPrompt

    bb, _ = _adapted("llama")
    soft = SoftPrompt.create(3, bb, "vocab", 0)
    soft.requires_grad_(True)
    fast = UpperLayerScorer(CandidateScorer(bb), 1, soft)
    with pytest.raises(DelrecError, match="frozen soft prompt"):
        fast.score(PROMPTS, CANDS, soft)
    with pytest.raises(DelrecError, match="train_layers"):
        UpperLayerScorer(CandidateScorer(bb), 0)
    with pytest.raises(DelrecError, match="train_layers"):
        add_adalora(tiny_backbone("llama"), Stage2Config(steps=10, warmup=0, eval_every=10, init_r=4,
                                                         target_r=2, train_layers=5))
    with pytest.raises(DelrecError, match="train_layers"):
        add_adalora(tiny_backbone("t5"), Stage2Config(steps=10, warmup=0, eval_every=10, init_r=4, target_r=2,
                                                         train_layers=1))


def test_sampled_negatives_keep_the_target_and_order():
    ex = PromptExample("lsr", "p", tuple("abcdefghij"), tuple(range(10)), 6)
    for seed in range(20):
        sub = with_sampled_negatives(ex, 3, random.Random(seed))
        assert len(sub.candidates) == 4 and sub.candidates[sub.label] == "g"
        assert list(sub.items) == sorted(sub.items) and sub.items[sub.label] == 6
    assert with_sampled_negatives(ex, 0, random.Random(0)) is ex
    assert with_sampled_negatives(ex, 9, random.Random(0)) is ex
    draws = {with_sampled_negatives(ex, 3, random.Random(s)).candidates for s in range(20)}
    assert len(draws) > 5


def test_two_processes_train_on_exactly_the_rows_of_one(monkeypatch):
    from delrec import dist
    from delrec.stages.batches import batch_indices, sampled_batch

    examples = [PromptExample("lsr", f"p{i}", tuple("abcdefghij"), tuple(range(10)), i % 10) for i in range(24)]

    def rows(rank, world, step):
        monkeypatch.setattr(dist, "world", lambda: (rank, world))
        idx = batch_indices(len(examples), 8, step, 0, 1, seed=3)
        return [(e.prompt, e.candidates) for e in sampled_batch(examples, idx, 3, 3, step, 0)]

    for step in range(5):  # across epoch boundaries too (24 examples, batches of 8)
        assert rows(0, 2, step) + rows(1, 2, step) == rows(0, 1, step)
