"""Stage 1 and stage 2 on tiny random LMs: what trains, what stays frozen, exact resume, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import lsr_examples, stage1_examples, tiny_scorer, world

from delrec import DelrecError
from delrec.config import Stage1Config, Stage2Config
from delrec.lm.adapters import add_adalora
from delrec.stages.checkpoint import load_checkpoint, save_checkpoint
from delrec.stages.distill import Stage1Data, distill, task_weights
from delrec.stages.finetune import finetune


def _soft(scorer, n=4, seed=0):
    from delrec.lm.soft_prompt import SoftPrompt

    return SoftPrompt.create(n, scorer.backbone, init="vocab", seed=seed)


def test_task_weights_follow_inverse_gradient_norms():
    w = task_weights({"ta": 4.0, "rps": 1.0}, alpha=0.5)
    assert w["ta"] + w["rps"] == pytest.approx(1.0)
    assert w["rps"] / w["ta"] == pytest.approx(2.0)  # (1/1)^0.5 / (1/4)^0.5
    assert task_weights({"ta": 2.0}, 0.5) == {"ta": 1.0}


def _stage1(tmp_path, steps=6, stop_after=None, resume=False, tasks=("ta", "rps"), eval_every=2, minutes=10.0):
    torch.manual_seed(0)
    ds, split = world()
    _, (ta_tr, rps_tr, ta_va, rps_va) = stage1_examples(ds, split)
    scorer = tiny_scorer(ds)
    soft = _soft(scorer)
    cfg = Stage1Config(steps=steps, batch_size=4, lr=0.05, warmup=1, eval_every=eval_every,
                       max_eval_examples=8, patience=10, checkpoint_minutes=minutes)
    out = distill(scorer, soft, Stage1Data(ta_tr, rps_tr, ta_va, rps_va), cfg, tmp_path, seed=0, tasks=tasks,
                  resume=resume, stop_after=stop_after, eval_batch_size=8)
    return scorer, soft, out


def test_stage1_trains_only_the_soft_prompt_and_logs_weights(tmp_path):
    ds, _ = world()
    before_model = {k: v.clone() for k, v in tiny_scorer(ds).backbone.model.state_dict().items()}
    scorer, soft, out = _stage1(tmp_path)
    init = _soft(scorer).weight
    assert out["finished"] and out["steps"] == 6
    assert not torch.equal(soft.weight, init), "the soft prompt did not change"
    for k, v in scorer.backbone.model.state_dict().items():
        assert torch.equal(v, before_model[k]), f"frozen LM weight {k} changed"
    logs = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in logs if "w_ta" in r]
    assert len(steps) == 6
    assert all(r["w_ta"] + r["w_rps"] == pytest.approx(1.0) for r in steps)
    assert (tmp_path / "soft_prompt.safetensors").exists()


def test_stage1_resume_matches_uninterrupted_run(tmp_path):
    _, full, out_full = _stage1(tmp_path / "a", steps=6)
    _, _, out_cut = _stage1(tmp_path / "b", steps=6, stop_after=3)  # killed after step 3; checkpoint at 2
    assert not out_cut["finished"]
    _, resumed, out_res = _stage1(tmp_path / "b", steps=6, resume=True)
    assert out_res["finished"]
    assert torch.equal(resumed.weight, full.weight)
    assert out_res["evals"] == out_full["evals"]


def test_checkpoints_between_validations_after_checkpoint_minutes(tmp_path):
    _, full, out_full = _stage1(tmp_path / "a", steps=6, eval_every=6)
    # checkpoint_minutes=0: a checkpoint after every step, so a kill after step 4 loses nothing
    _, _, out_cut = _stage1(tmp_path / "b", steps=6, stop_after=4, eval_every=6, minutes=0.0)
    assert not out_cut["finished"]
    _, resumed, out_res = _stage1(tmp_path / "b", steps=6, resume=True, eval_every=6, minutes=0.0)
    logs = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if r.get("event") == "resumed"] == [4]
    assert torch.equal(resumed.weight, full.weight) and out_res["evals"] == out_full["evals"]


def test_checkpoint_carries_its_stage_config_and_refuses_other_settings(tmp_path):
    _stage1(tmp_path, steps=6, stop_after=3)
    _, meta = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert meta["section"] == "stage1" and Stage1Config(**meta["config"]).steps == 6
    with pytest.raises(DelrecError, match=r"stage1\.steps=6"):
        _stage1(tmp_path, steps=8, resume=True)


def test_corrupt_checkpoint_is_reported_and_previous_kept(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, {"a": torch.ones(3)}, {"step": 1})
    save_checkpoint(path, {"a": torch.zeros(3)}, {"step": 2})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DelrecError, match="corrupt or truncated.*previous checkpoint"):
        load_checkpoint(path)
    tensors, meta = load_checkpoint(path.with_suffix(".prev.safetensors"))
    assert meta == {"step": 1} and torch.equal(tensors["a"], torch.ones(3))


def test_stage2_adalora_trains_reallocates_and_keeps_soft_prompt(tmp_path):
    torch.manual_seed(0)
    ds, split = world()
    builder, _ = stage1_examples(ds, split)
    train, valid = lsr_examples(ds, split, builder)
    scorer = tiny_scorer(ds)
    soft = _soft(scorer)
    soft_before = soft.weight.detach().clone()
    cfg = Stage2Config(steps=10, batch_size=4, lr=0.01, warmup=1, eval_every=5, max_eval_examples=8, init_r=6,
                      target_r=2, tinit=2, tfinal=3, patience=10)
    model = add_adalora(scorer.backbone, cfg)
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert lora_before and all("lora_" in n for n in lora_before)
    out = finetune(scorer, soft, train, valid, cfg, tmp_path, seed=0, eval_batch_size=8)
    assert out["finished"]
    after = dict(model.named_parameters())
    changed = [n for n, p in lora_before.items() if not torch.equal(after[n], p)]
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)
    assert torch.equal(soft.weight, soft_before), "stage 2 must not touch the soft prompt"
    pattern = model.peft_config["default"].rank_pattern
    kept = [sum(v) for v in pattern.values()]
    assert pattern and sum(kept) < 6 * len(kept), "AdaLoRA did not prune any rank"
    assert sum(kept) <= cfg.target_r * len(kept)  # the final budget, spread unevenly over modules
    assert (tmp_path / "adapter" / "adapter_config.json").exists()


def test_lion_minimises_and_its_state_survives_a_checkpoint(tmp_path):
    from delrec.stages.checkpoint import load_optimizer_tensors, optimizer_tensors
    from delrec.stages.optim import Lion

    w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = Lion([w], lr=0.1)
    for t in range(200):  # sign updates need the decaying schedule the loop applies
        opt.param_groups[0]["lr"] = 0.1 * (1 - t / 200)
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
    assert w.abs().max() < 0.01
    tensors, groups = optimizer_tensors(opt)
    save_checkpoint(tmp_path / "c.safetensors", tensors, {"groups": groups})
    loaded, meta = load_checkpoint(tmp_path / "c.safetensors")
    opt2 = Lion([torch.nn.Parameter(w.detach().clone())], lr=0.1)
    load_optimizer_tensors(opt2, loaded, meta["groups"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def _stage2(tmp_path, stop_after=None, resume=False):
    ds, split = world()
    builder, _ = stage1_examples(ds, split)
    train, valid = lsr_examples(ds, split, builder, soft=False)
    scorer = tiny_scorer(ds)
    cfg = Stage2Config(steps=8, batch_size=4, lr=0.01, warmup=1, eval_every=2, max_eval_examples=8, init_r=6,
                      target_r=2, tinit=1, tfinal=2, patience=10)
    model = add_adalora(scorer.backbone, cfg, seed=0)
    out = finetune(scorer, None, train, valid, cfg, tmp_path, seed=0, resume=resume, stop_after=stop_after,
                   eval_batch_size=8)
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}, out, model


def test_stage2_resume_restores_adapter_optimizer_and_rank_allocator(tmp_path):
    full, out_full, m_full = _stage2(tmp_path / "a")
    _, cut, _ = _stage2(tmp_path / "b", stop_after=5)  # killed after step 5; last checkpoint at step 4
    assert not cut["finished"]
    resumed, out_res, m_res = _stage2(tmp_path / "b", resume=True)
    assert out_res["finished"] and out_res["evals"] == out_full["evals"]
    for n, p in full.items():
        assert torch.equal(resumed[n], p), n
    assert m_res.peft_config["default"].rank_pattern == m_full.peft_config["default"].rank_pattern


@pytest.mark.parametrize("cfg,evaluate,name", [
    (Stage2Config(steps=2, warmup=0, eval_every=2), "accuracy", "hr@1"),   # finetune(metric=accuracy)
    (Stage2Config(steps=2, warmup=0, eval_every=2), "ndcg5", "ndcg@5"),     # stage 2's default
    (Stage1Config(steps=2, warmup=0, eval_every=2), None, "accuracy (TA/RPS mean)"),  # a plain mean
])
def test_the_log_names_the_validation_metric(cfg, evaluate, name, tmp_path):
    import numpy as np

    from delrec import evaluate as ev
    from delrec.stages.loop import JsonlLog, Trainer

    w = torch.nn.Parameter(torch.ones(2))

    def step_fn(step):
        w.grad = torch.ones(2)
        return {}

    scores, labels = np.array([[0.9, 0.1], [0.2, 0.8]]), [0, 0]
    value = (lambda: getattr(ev, evaluate)(scores, labels)) if evaluate else (lambda: 0.25)
    Trainer(cfg, {"w": w}, tmp_path, "s", JsonlLog(tmp_path / "log.jsonl")).fit(step_fn, value, seed=0)
    evals = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [(r["metric"], type(r["valid"])) for r in evals] == [(name, float)]



@pytest.mark.parametrize("kind", ["t5", "llama", "gpt2"])
def test_packed_tasks_give_each_task_the_gradient_of_its_own_pass(kind):
    # stage1.pack_tasks: TA and RPS rows in one forward/backward must reproduce two separate passes
    from delrec.stages.batches import sampled_batch
    from delrec.stages.distill import task_gradients

    ds, split = world()
    _, (ta_tr, rps_tr, _, _) = stage1_examples(ds, split)
    scorer = tiny_scorer(ds, kind=kind)
    soft = _soft(scorer)
    soft.requires_grad_(True)
    batches = {"ta": sampled_batch(ta_tr, [0, 1, 2], 3, 0, 0, 0), "rps": sampled_batch(rps_tr, [3, 4], 3, 1, 0, 0)}
    packed_loss, packed = task_gradients(scorer, batches, soft, 0.5, pack=True)
    plain_loss, plain = task_gradients(scorer, batches, soft, 0.5, pack=False)
    for t in ("ta", "rps"):
        assert packed_loss[t] == pytest.approx(plain_loss[t], rel=1e-5, abs=1e-6)
        assert plain[t].abs().max() > 0
        torch.testing.assert_close(packed[t], plain[t], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(packed["ta"], packed["rps"]), "the two tasks' gradients were not separated"


def test_packed_and_plain_stage1_runs_train_the_same_soft_prompt(tmp_path):
    ds, split = world()
    _, data = stage1_examples(ds, split)
    weights = []
    for pack in (True, False):
        torch.manual_seed(0)
        scorer = tiny_scorer(ds, kind="llama")
        soft = _soft(scorer)
        cfg = Stage1Config(steps=3, batch_size=4, lr=0.05, warmup=1, eval_every=3, max_eval_examples=8,
                           train_negatives=3, pack_tasks=pack)
        distill(scorer, soft, Stage1Data(*data), cfg, tmp_path / str(pack), seed=0, eval_batch_size=8)
        weights.append(soft.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-5)


def test_stage1_stops_on_a_validation_plateau_and_resume_does_not_train_further(tmp_path):
    ds, split = world()
    _, data = stage1_examples(ds, split)
    scorer = tiny_scorer(ds)
    # an lr that cannot move the accuracy: every evaluation after the first is "no better"
    cfg = Stage1Config(steps=20, batch_size=4, lr=1e-12, warmup=0, eval_every=1, max_eval_examples=8, patience=2)
    out = distill(scorer, _soft(scorer), Stage1Data(*data), cfg, tmp_path, seed=0, eval_batch_size=8)
    assert out["finished"] and out["stop_reason"] == "patience" and out["steps"] == 3
    log = tmp_path / "log.jsonl"
    n_rows = len(log.read_text().splitlines())
    again = distill(scorer, _soft(scorer), Stage1Data(*data), cfg, tmp_path, seed=0, resume=True, eval_batch_size=8)
    assert again["steps"] == 3 and again["stop_reason"] == "patience"
    rows = [json.loads(x) for x in log.read_text().splitlines()[n_rows:]]
    assert not [r for r in rows if "grad_norm" in r], "the resumed run trained further after early stopping"


def test_stage1_max_history_shortens_ta_and_rps_prompts_and_keys_only_when_set():
    from delrec.config import load_config
    from delrec.lm_rows import prompt_builder, stage1_builder
    from delrec.prompts.examples import build_stage1

    ds, split = world()
    cfg = load_config(None, ["data.max_history=6", "stage1.max_history=2"])
    full, short = prompt_builder(cfg, ds), stage1_builder(cfg, ds)
    assert (full.max_history, short.max_history) == (6, 2)
    hist = [e.history for e in split.train if len(e.history) >= 8][:4]
    assert hist, "the tiny world has no history long enough to shorten"
    top = [[1, 2, 3]] * len(hist)
    (ta_long, rps_long), (ta_short, rps_short) = (build_stage1(b, hist, top, seed=0) for b in (full, short))
    assert len(ta_long) == len(ta_short) == len(rps_long) == len(rps_short) == len(hist)
    for long_ex, short_ex in zip(ta_long + rps_long, ta_short + rps_short):
        assert len(short_ex.prompt) < len(long_ex.prompt)
    assert "max_history" not in Stage1Config().settings() and "pack_tasks" not in Stage1Config().settings()
    assert Stage1Config(max_history=3).settings()["max_history"] == 3
    with pytest.raises(DelrecError, match="stage1.max_history"):
        Stage1Config(max_history=-1)
