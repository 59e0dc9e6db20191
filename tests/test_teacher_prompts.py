"""The teacher-projected prompts (lm/teacher_prompts.py): delrec+user's per-user soft prompt and delrec+hybrid's
item slots start as delrec, train with the adapters (at the input and at the upper blocks), are stored and read
back exactly, and read the teacher's vectors of the history and catalogue, never the target."""

from __future__ import annotations

import pytest
import torch
from helpers import lsr_examples, stage1_examples, tiny_scorer, world

from delrec import DelrecError
from delrec.config import Stage2Config
from delrec.data.candidates import CandidateSet, make_candidates
from delrec.evaluate import score_examples
from delrec.lm.adapters import add_adalora
from delrec.lm.soft_prompt import SoftPrompt
from delrec.lm.teacher_prompts import UserPrompt, user_states
from delrec.stages.finetune import finetune


def _setup(kind):
    ds, split = world()
    builder, _ = stage1_examples(ds, split)
    train, valid = lsr_examples(ds, split, builder)
    scorer = tiny_scorer(ds, kind=kind)
    soft = SoftPrompt.create(4, scorer.backbone, seed=0)
    return ds, split, train, valid, scorer, soft


@pytest.mark.parametrize("kind", ["t5", "llama", "gpt2"])
def test_a_new_user_prompt_scores_exactly_as_its_stage1_prompt(kind):
    _, _, _, valid, scorer, soft = _setup(kind)
    user = UserPrompt(soft, user_dim=6, rank=3, seed=0)
    users = torch.randn(len(valid), 6)
    shared = score_examples(scorer, valid, soft, batch_size=4)
    per_user = score_examples(scorer, valid, user, batch_size=4, users=users)
    assert shared.shape == per_user.shape and shared.std() > 0
    torch.testing.assert_close(torch.from_numpy(per_user), torch.from_numpy(shared), rtol=0, atol=1e-6)


def test_stage2_trains_the_projector_and_users_then_score_differently(tmp_path):
    torch.manual_seed(0)
    _, _, train, valid, scorer, soft = _setup("llama")
    soft_before = soft.weight.detach().clone()
    user = UserPrompt(soft, user_dim=6, rank=3, seed=0)
    train_users, valid_users = torch.randn(len(train), 6), torch.randn(len(valid), 6)
    cfg = Stage2Config(steps=6, batch_size=4, lr=0.05, warmup=1, eval_every=3, max_eval_examples=8, init_r=4,
                       target_r=2, tinit=1, tfinal=2, patience=10, train_layers=1)
    add_adalora(scorer.backbone, cfg)
    out = finetune(scorer, None, train, valid, cfg, tmp_path, seed=0, eval_batch_size=8,
                   projector=(user, train_users, valid_users))
    assert out["finished"]
    assert user.up.weight.abs().max() > 0, "the projector did not train"
    torch.testing.assert_close(user.base, soft_before)  # the stage-1 prompt inside stays frozen
    # the same example for two users: two different score rows (the row is a function of the user)
    ex = [valid[0], valid[0]]
    two = score_examples(scorer, ex, user, batch_size=2, users=valid_users[:2])
    assert not torch.allclose(torch.from_numpy(two[0]), torch.from_numpy(two[1]))
    stored = UserPrompt.load(tmp_path / "user_prompt.safetensors")
    for k, v in user.state_dict().items():
        torch.testing.assert_close(stored.state_dict()[k], v.cpu())


def test_a_user_prompt_file_is_checked_on_load(tmp_path):
    soft = SoftPrompt(3, 8)
    with pytest.raises(DelrecError, match="user prompt: .*does not exist.*delrec\\+user"):
        UserPrompt.load(tmp_path / "none.safetensors")
    soft.save(tmp_path / "soft.safetensors")
    with pytest.raises(DelrecError, match="is not a delrec user prompt"):
        UserPrompt.load(tmp_path / "soft.safetensors")
    with pytest.raises(DelrecError, match="eval.projector_rank"):
        UserPrompt(soft, user_dim=4, rank=0)


def test_user_states_read_the_history_and_never_the_target():
    """The projector's input for a test user is the teacher's state of that user's history: changing the
    user's test target (or candidates) changes nothing, changing the history does."""
    from delrec.config import TeacherConfig
    from delrec.teachers import build_teacher
    from delrec.teachers.teacher import Teacher

    ds, split = world()
    cfg = TeacherConfig(hidden=16, max_len=10)
    teacher = Teacher("sasrec", build_teacher("sasrec", ds.n_items, cfg), cfg)
    sets = make_candidates(ds, split.test[:4], n_candidates=6, seed=0)
    base = user_states(teacher, [c.history for c in sets])
    other_target = [CandidateSet(c.user, c.history, c.candidates[::-1], c.candidates[-1]) for c in sets]
    torch.testing.assert_close(user_states(teacher, [c.history for c in other_target]), base)
    shorter = user_states(teacher, [c.history[:-1] for c in sets])
    assert base.shape == (4, 16) and not torch.allclose(shorter, base)


def test_upper_user_part_starts_as_delrec_and_trains_only_through_the_adapted_blocks(tmp_path):
    """eval.projector_at=upper: the lower blocks see the stage-1 prompt (their stored states are delrec's), the user
    part joins the soft positions where the adapted blocks begin; a new one scores as delrec does there."""
    from delrec.lm.adapters import first_adapted_block
    from delrec.lm.layer_cache import UpperLayerScorer
    from delrec.lm.teacher_prompts import projector_scorer

    torch.manual_seed(0)
    _, _, train, valid, scorer, soft = _setup("llama")
    soft.requires_grad_(False)  # as in stage 2
    user = UserPrompt(soft, user_dim=6, rank=3, seed=0, at="upper")
    assert [n for n, _ in user.named_parameters()] == ["down.weight", "up.weight"]
    users = torch.randn(len(valid), 6)
    upper = projector_scorer(scorer, user, train_layers=1)
    plain = UpperLayerScorer(scorer, first_adapted_block(scorer.backbone, 1), soft)
    torch.testing.assert_close(torch.from_numpy(score_examples(upper, valid, user, batch_size=4, users=users)),
                               torch.from_numpy(score_examples(plain, valid, soft, batch_size=4)), rtol=0, atol=1e-6)
    with pytest.raises(DelrecError, match="projector_at=upper"):
        score_examples(scorer, valid[:2], user, users=users[:2])  # the full model cannot add it
    cfg = Stage2Config(steps=6, batch_size=4, lr=0.05, warmup=1, eval_every=3, max_eval_examples=8, init_r=4,
                       target_r=2, tinit=1, tfinal=2, patience=10, train_layers=1)
    add_adalora(scorer.backbone, cfg)
    out = finetune(scorer, None, train, valid, cfg, tmp_path, seed=0, eval_batch_size=8,
                   projector=(user, torch.randn(len(train), 6), users))
    assert out["finished"] and user.up.weight.abs().max() > 0
    two = score_examples(projector_scorer(scorer, user, 1), [valid[0], valid[0]], user, batch_size=2, users=users[:2])
    assert not torch.allclose(torch.from_numpy(two[0]), torch.from_numpy(two[1]))
    assert UserPrompt.load(tmp_path / "user_prompt.safetensors").at == "upper"


def _hybrid_setup(kind):
    from delrec.prompts.examples import PromptBuilder

    ds, split = world()
    builder = PromptBuilder(ds.catalog, ds.domain, "sasrec", 4, 6, list_candidates=False)
    sets = make_candidates(ds, split.valid[:8], n_candidates=6, seed=1)
    return ds, [builder.lsr(c, slots=True) for c in sets], tiny_scorer(ds, kind=kind)


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_item_slots_hold_the_projected_item_vectors_at_the_input(kind):
    """delrec+hybrid at the input: one slot per history title in the prompt's token ids; a new projector puts
    zero vectors there, and a trained one makes two users with the same titles but other items differ."""
    from delrec.lm.scoring import SLOT
    from delrec.lm.teacher_prompts import HybridPrompt

    ds, ex, scorer = _hybrid_setup(kind)
    soft = SoftPrompt.create(4, scorer.backbone, seed=0)
    prepared = scorer.prepare_all([e.prompt for e in ex], soft)
    assert [ids.count(SLOT) for ids, _ in prepared] == [len(e.slot_items) for e in ex] and ex[0].slot_items
    hybrid = HybridPrompt(soft, torch.randn(ds.n_items, 6), rank=3, seed=0)
    zero = score_examples(scorer, ex, hybrid, batch_size=4)
    torch.testing.assert_close(torch.from_numpy(zero), torch.from_numpy(score_examples(scorer, ex, soft, batch_size=4)))
    with torch.no_grad():
        hybrid.up.weight.normal_(0, 0.5)
    moved = score_examples(scorer, ex, hybrid, batch_size=4)
    assert not torch.allclose(torch.from_numpy(moved), torch.from_numpy(zero))
    # the gradient reaches the projector through the slots
    rows = hybrid.for_examples(ex[:2])
    scorer.score([e.prompt for e in ex[:2]], [list(e.candidates) for e in ex[:2]], rows).sum().backward()
    assert hybrid.up.weight.grad.abs().max() > 0


def test_upper_item_slots_match_the_input_ones_at_zero_and_train(tmp_path):
    from delrec.lm.teacher_prompts import HybridPrompt, load_projector, projector_scorer

    torch.manual_seed(0)
    ds, ex, scorer = _hybrid_setup("llama")
    soft = SoftPrompt.create(4, scorer.backbone, seed=0).requires_grad_(False)
    hybrid = HybridPrompt(soft, torch.randn(ds.n_items, 6), rank=3, seed=0, at="upper")
    from delrec.lm.adapters import first_adapted_block
    from delrec.lm.layer_cache import UpperLayerScorer

    upper = projector_scorer(scorer, hybrid, train_layers=1)
    plain = UpperLayerScorer(scorer, first_adapted_block(scorer.backbone, 1), soft)  # zero slots, stored states
    torch.testing.assert_close(torch.from_numpy(score_examples(upper, ex, hybrid, batch_size=4)),
                               torch.from_numpy(score_examples(plain, ex, soft, batch_size=4)), rtol=0, atol=1e-6)
    with torch.no_grad():
        hybrid.up.weight.normal_(0, 0.5)
    assert not torch.allclose(torch.from_numpy(score_examples(upper, ex, hybrid, batch_size=4)),
                              torch.from_numpy(score_examples(plain, ex, soft, batch_size=4)))
    with torch.no_grad():
        hybrid.up.weight.zero_()
    cfg = Stage2Config(steps=6, batch_size=4, lr=0.05, warmup=1, eval_every=3, max_eval_examples=8, init_r=4,
                       target_r=2, tinit=1, tfinal=2, patience=10, train_layers=1)
    add_adalora(scorer.backbone, cfg)
    out = finetune(scorer, None, ex, ex, cfg, tmp_path, seed=0, eval_batch_size=8, projector=(hybrid, None, None),
                   curriculum=True)
    assert out["finished"] and hybrid.up.weight.abs().max() > 0
    stored = load_projector(tmp_path, hybrid=True)
    assert stored.at == "upper" and torch.equal(stored.items, hybrid.items)


def test_a_cut_prompt_keeps_its_newest_slots_and_their_vectors():
    """lm.max_prompt_tokens cuts the oldest history first: the k slots left take the last k item vectors."""
    import warnings

    from delrec.lm.scoring import SLOT, _fill_slots
    from delrec.lm.soft_prompt import PerRowSoft

    _, ex, scorer = _hybrid_setup("llama")
    full = scorer.prepare_all([ex[0].prompt], None)[0][0]
    scorer.max_prompt_tokens = len(full) - 30
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cut = scorer.prepare_all([ex[0].prompt], None)[0][0]
    k, n = cut.count(SLOT), len(ex[0].slot_items)
    assert 0 < k < n

    class Rows(PerRowSoft):
        def slot_inputs(self, row):
            return torch.arange(n, dtype=torch.float32)[:, None].expand(n, 3)

    row = _fill_slots(torch.full((len(cut), 3), -1.0), cut, Rows(), 0)
    assert row[[j for j, t in enumerate(cut) if t == SLOT], 0].tolist() == list(range(n - k, n))
