"""Stage 1: distil the teacher's behaviour into the soft prompt (TA + RPS), the LM frozen.

Loss weighting (docs/method.md §5): w_i ∝ (1/‖∇_soft L_i‖)^α, normalised, recomputed every step from the two
task gradients. The task gradients are averaged across processes before weighting, so every process applies
the same weights and the same update.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from delrec import DelrecError, dist
from delrec.config import Stage1Config
from delrec.evaluate import Scorer, accuracy, score_examples
from delrec.lm.soft_prompt import RowSoftPrompt, SoftPrompt
from delrec.stages.batches import batch_indices, sampled_batch
from delrec.stages.loop import JsonlLog, Trainer


@dataclass
class Stage1Data:
    ta_train: list
    rps_train: list
    ta_valid: list
    rps_valid: list


def task_weights(norms: dict[str, float], alpha: float) -> dict[str, float]:
    inv = {k: (1.0 / max(n, 1e-12)) ** alpha for k, n in norms.items()}
    total = sum(inv.values())
    return {k: v / total for k, v in inv.items()}


def _loss(scorer: Scorer, examples, soft) -> torch.Tensor:
    scores = scorer.score([e.prompt for e in examples], [list(e.candidates) for e in examples], soft)
    labels = torch.tensor([e.label for e in examples], device=scores.device)
    return F.cross_entropy(scores.float(), labels)


def task_gradients(scorer: Scorer, batches: dict[str, list], soft_prompt: SoftPrompt, scale: float = 1.0,
                   pack: bool = False) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Each task's loss and its gradient w.r.t. the soft prompt (times `scale`).

    pack: all tasks' rows in one forward and one backward pass (rows never see each other; each task splices
    its own view of the soft prompt, so the two gradients come apart exactly). Tasks whose rows have different
    candidate counts cannot share a batch and run one pass each, as with pack=False."""
    counts = {len(e.candidates) for b in batches.values() for e in b}
    if pack and len(batches) > 1 and len(counts) == 1:
        rows = [e for b in batches.values() for e in b]
        soft = RowSoftPrompt(soft_prompt, [g for g, b in enumerate(batches.values()) for _ in b])
        scores = scorer.score([e.prompt for e in rows], [list(e.candidates) for e in rows], soft).float()
        labels = torch.tensor([e.label for e in rows], device=scores.device)
        losses, lo = {}, 0
        for t, b in batches.items():
            losses[t] = F.cross_entropy(scores[lo:lo + len(b)], labels[lo:lo + len(b)])
            lo += len(b)
        grads = torch.autograd.grad(sum(losses.values()) * scale, soft.views)
        return {t: v.item() for t, v in losses.items()}, dict(zip(batches, grads))
    losses, grads = {}, {}
    for t, b in batches.items():
        loss = _loss(scorer, b, soft_prompt)
        (grads[t],) = torch.autograd.grad(loss * scale, soft_prompt.weight)
        losses[t] = loss.item()
    return losses, grads


def distill(scorer: Scorer, soft_prompt: SoftPrompt, data: Stage1Data, cfg: Stage1Config, run_dir: Path, *,
            seed: int, tasks=("ta", "rps"), resume: bool = False, stop_after: int | None = None,
            log: JsonlLog | None = None, eval_batch_size: int = 8, name: str = "stage1") -> dict:
    """Train `soft_prompt` in place; the best weights (validation TA/RPS accuracy) are restored and saved."""
    run_dir = Path(run_dir)
    log = log or JsonlLog(run_dir / "log.jsonl")
    train = {"ta": data.ta_train, "rps": data.rps_train}
    valid = {"ta": data.ta_valid[:cfg.max_eval_examples], "rps": data.rps_valid[:cfg.max_eval_examples]}
    if not any(train[t] for t in tasks):
        raise DelrecError(f"stage 1: no training examples for tasks {', '.join(tasks)} (TA needs training "
                          f"histories of at least 5 items, RPS the teacher's top-k); check "
                          f"data.min_interactions and data.max_train_examples")
    tasks = [t for t in tasks if train[t]]
    scorer.backbone.model.eval()
    soft_prompt.requires_grad_(True)
    w = soft_prompt.weight

    def step_fn(step: int) -> dict:
        grads = {t: torch.zeros_like(w) for t in tasks}
        logs = {}
        for micro in range(cfg.grad_accum):
            batches = {t: sampled_batch(train[t], batch_indices(len(train[t]), cfg.batch_size, step, micro,
                                                                cfg.grad_accum, seed + i),
                                        cfg.train_negatives, seed + i, step, micro) for i, t in enumerate(tasks)}
            losses, micro_grads = task_gradients(scorer, batches, soft_prompt, 1.0 / cfg.grad_accum, cfg.pack_tasks)
            for t in tasks:
                grads[t] += micro_grads[t]
                logs[f"loss_{t}"] = logs.get(f"loss_{t}", 0.0) + losses[t] / cfg.grad_accum
        dist.all_reduce_mean_(list(grads.values()))
        logs = {k: dist.global_mean(v) for k, v in logs.items()}
        weights = task_weights({t: float(g.norm()) for t, g in grads.items()}, cfg.alpha)
        w.grad = sum(weights[t] * grads[t] for t in tasks)
        logs |= {f"w_{t}": weights[t] for t in tasks}
        logs["grads_reduced"] = True
        return logs

    def evaluate() -> float:
        accs = []
        for t in tasks:
            s = score_examples(scorer, valid[t], soft_prompt, batch_size=eval_batch_size, desc=f"valid {t}")
            accs.append(accuracy(s, [e.label for e in valid[t]]))
        log.write(stage=name, event="eval_tasks", step=trainer.state.step,
                  **{f"valid_acc_{t}": a for t, a in zip(tasks, accs)})
        return sum(accs) / len(accs)

    trainer = Trainer(cfg, {"soft_prompt": w}, run_dir, name, log)
    trainer.fit(step_fn, evaluate, seed=seed, resume=resume, stop_after=stop_after)
    if trainer.finished:
        trainer.save_best(run_dir / "soft_prompt.safetensors", soft_prompt.save)
    soft_prompt.requires_grad_(False)
    return trainer.result()
