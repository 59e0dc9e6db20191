"""Same seed, same thread count: bit-identical training; a resumed (or restarted) stage logs one history."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import stage1_examples, tiny_scorer, world

from delrec.config import Stage1Config
from delrec.lm.soft_prompt import SoftPrompt
from delrec.stages.determinism import deterministic_on_cpu
from delrec.stages.distill import Stage1Data, _loss, distill
from delrec.stages.loop import JsonlLog, Trainer


@pytest.fixture
def two_threads():
    """The multi-threaded kernels are where runs diverged; the suite otherwise runs on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _stage1(run_dir, steps=4, stop_after=None, resume=False):
    ds, split = world()
    _, (ta_tr, rps_tr, ta_va, rps_va) = stage1_examples(ds, split)
    scorer = tiny_scorer(ds)
    soft = SoftPrompt.create(4, scorer.backbone, init="vocab", seed=0)
    cfg = Stage1Config(steps=steps, batch_size=8, lr=0.05, warmup=1, eval_every=2, max_eval_examples=4)
    out = distill(scorer, soft, Stage1Data(ta_tr, rps_tr, ta_va, rps_va), cfg, run_dir, seed=0, resume=resume,
                  stop_after=stop_after, eval_batch_size=8)
    return soft.weight.detach().clone(), out


def _records(run_dir, markers=True):
    out = []
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec.pop("elapsed_s", None)  # wall time is the one thing allowed to differ
        rec.pop("time", None)
        if markers or rec.get("event") not in ("start", "resumed"):
            out.append(rec)
    return out


def test_soft_prompt_gradient_is_bit_identical_with_two_threads(two_threads):
    # Without deterministic mode these three gradients differed in their last bits (atomic float adds in the
    # backward of the T5 cached pass's row gathers); two threads on a busy 2-core machine are slow, so the
    # check stays at the gradient instead of whole runs.
    ds, split = world()
    _, (ta, _, _, _) = stage1_examples(ds, split)
    scorer = tiny_scorer(ds)
    soft = SoftPrompt.create(4, scorer.backbone, init="vocab", seed=0).requires_grad_(True)
    grads = []
    with deterministic_on_cpu("cpu"):
        for _ in range(3):
            (g,) = torch.autograd.grad(_loss(scorer, ta[:8], soft), soft.weight)
            grads.append(g)
    assert all(torch.equal(g, grads[0]) for g in grads[1:]), [float((g - grads[0]).abs().max()) for g in grads]


def test_training_steps_run_in_deterministic_mode(tmp_path):
    w = torch.nn.Parameter(torch.ones(3))
    seen = []

    def step_fn(step):
        seen.append(torch.are_deterministic_algorithms_enabled())
        w.grad = torch.ones(3)
        return {}

    cfg = Stage1Config(steps=2, warmup=0, eval_every=2)
    trainer = Trainer(cfg, {"w": w}, tmp_path, "t", JsonlLog(tmp_path / "l"))
    trainer.fit(step_fn, lambda: 0.0, seed=0)
    assert seen == [True, True] and not torch.are_deterministic_algorithms_enabled()


def test_resumed_run_is_bit_identical_and_logs_one_history(tmp_path):
    full, _ = _stage1(tmp_path / "a")
    _stage1(tmp_path / "b", stop_after=3)  # killed after step 3; the checkpoint is at step 2
    resumed, out = _stage1(tmp_path / "b", resume=True)
    assert out["finished"] and torch.equal(resumed, full)
    steps = [r["step"] for r in _records(tmp_path / "b") if "grad_norm" in r]
    assert steps == [1, 2, 3, 4], "step 3 was logged by the killed run and again after the resume"
    assert _records(tmp_path / "b", False) == _records(tmp_path / "a", False)


def test_a_restarted_stage_logs_one_history(tmp_path):
    _stage1(tmp_path / "a", stop_after=3)
    _stage1(tmp_path / "a")  # not resumed: the stage starts again from step 0
    steps = [r["step"] for r in _records(tmp_path / "a") if "grad_norm" in r]
    assert steps == [1, 2, 3, 4]


def test_forgetting_redone_steps_keeps_other_folders_and_stages(tmp_path):
    log = JsonlLog(tmp_path / "log.jsonl")
    log.write(stage="stage2/delrec", step=5, loss=1.0)  # a record from before start markers existed
    log.write(stage="stage2/delrec", event="start", step=0, folder="delrec-old")
    log.write(stage="stage2/delrec", step=3, loss=1.0)
    log.write(stage="stage2/delrec", event="start", step=0, folder="delrec-new")
    log.write(stage="stage2/delrec", step=1, loss=2.0)
    log.write(stage="stage2/delrec", step=2, loss=2.0)
    log.write(stage="stage1/delrec", step=9, loss=3.0)
    log.forget_after("stage2/delrec", "delrec-new", 1)
    left = [(r["stage"], r["step"], r.get("folder")) for r in _records(tmp_path)]
    assert left == [("stage2/delrec", 5, None), ("stage2/delrec", 0, "delrec-old"), ("stage2/delrec", 3, None),
                    ("stage2/delrec", 0, "delrec-new"), ("stage2/delrec", 1, None), ("stage1/delrec", 9, None)]


def test_deterministic_mode_is_only_on_inside_training():
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_on_cpu("cpu"):
        assert torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_on_cpu("meta"):  # not CPU (a GPU in real runs): left alone
        assert not torch.are_deterministic_algorithms_enabled()
