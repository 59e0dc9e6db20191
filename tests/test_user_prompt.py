"""delrec+user's per-user soft prompt (lm/user_prompt.py): it starts as the stage-1 prompt, trains with the
adapters, is stored and read back exactly, and reads the teacher's state of the history, never the target."""

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
from delrec.lm.user_prompt import UserPrompt, user_states
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
                   user=(user, train_users, valid_users))
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
    with pytest.raises(DelrecError, match="eval.user_rank"):
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
    """eval.user_at=upper: the lower blocks see the stage-1 prompt (their stored states are delrec's), the user
    part joins the soft positions where the adapted blocks begin; a new one scores as delrec does there."""
    from delrec.lm.adapters import first_adapted_block
    from delrec.lm.layer_cache import UpperLayerScorer
    from delrec.lm.user_prompt import user_scorer

    torch.manual_seed(0)
    _, _, train, valid, scorer, soft = _setup("llama")
    soft.requires_grad_(False)  # as in stage 2
    user = UserPrompt(soft, user_dim=6, rank=3, seed=0, at="upper")
    assert [n for n, _ in user.named_parameters()] == ["down.weight", "up.weight"]
    users = torch.randn(len(valid), 6)
    upper = user_scorer(scorer, user, train_layers=1)
    plain = UpperLayerScorer(scorer, first_adapted_block(scorer.backbone, 1), soft)
    torch.testing.assert_close(torch.from_numpy(score_examples(upper, valid, user, batch_size=4, users=users)),
                               torch.from_numpy(score_examples(plain, valid, soft, batch_size=4)), rtol=0, atol=1e-6)
    with pytest.raises(DelrecError, match="user_at=upper"):
        score_examples(scorer, valid[:2], user, users=users[:2])  # the full model cannot add it
    cfg = Stage2Config(steps=6, batch_size=4, lr=0.05, warmup=1, eval_every=3, max_eval_examples=8, init_r=4,
                       target_r=2, tinit=1, tfinal=2, patience=10, train_layers=1)
    add_adalora(scorer.backbone, cfg)
    out = finetune(scorer, None, train, valid, cfg, tmp_path, seed=0, eval_batch_size=8,
                   user=(user, torch.randn(len(train), 6), users))
    assert out["finished"] and user.up.weight.abs().max() > 0
    two = score_examples(user_scorer(scorer, user, 1), [valid[0], valid[0]], user, batch_size=2, users=users[:2])
    assert not torch.allclose(torch.from_numpy(two[0]), torch.from_numpy(two[1]))
    assert UserPrompt.load(tmp_path / "user_prompt.safetensors").at == "upper"
