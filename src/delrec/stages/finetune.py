"""Stage 2 (LSR): AdaLoRA on the attention query/value projections, the stage-1 soft prompt frozen.

peft only adds AdaLoRA's orthogonal regulariser when the model computes the loss itself, and its rank
allocator needs `update_and_allocate(step)` after every optimiser step: both are done here explicitly. The
adapters themselves (adding, saving, loading, the regulariser) are `lm/adapters.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from delrec.config import Stage2Config
from delrec.dist import global_mean
from delrec.evaluate import Scorer, ndcg5, score_examples, with_prior
from delrec.lm.adapters import first_adapted_block, orthogonal_regulariser, save_adapter, trainable_params
from delrec.lm.layer_cache import UpperLayerScorer, share_across_processes
from delrec.lm.lower_store import LowerStateFile
from delrec.lm.soft_prompt import SoftPrompt
from delrec.stages.batches import batch_indices, example_rng, sampled_batch
from delrec.stages.loop import JsonlLog, Trainer


def _allocator_state(model) -> tuple:
    alloc = model.base_model.rankallocator
    return alloc, model.base_model.peft_config[model.base_model.trainable_adapter_name]


def finetune(scorer: Scorer, soft_prompt: SoftPrompt | None, train: list, valid: list, cfg: Stage2Config,
             run_dir: Path, *, seed: int, resume: bool = False, stop_after: int | None = None,
             log: JsonlLog | None = None, eval_batch_size: int = 8, name: str = "stage2",
             metric=ndcg5, projector: tuple | None = None, lower_tag: str | None = None,
             curriculum: bool = False) -> dict:
    """Train AdaLoRA adapters (already added with `add_adalora`); select by validation NDCG@5 (`metric`).

    `projector` = (a lm/teacher_prompts.py prompt, train user states, valid user states; the states None for
    delrec+hybrid, whose examples carry their items): trained with the adapters and saved beside them (its
    `file`); `soft_prompt` is then None. Its test pass needs `projector_scorer` (the full model cannot add an
    `upper` part). `curriculum` (delrec+hybrid): an example gets its item vectors with a probability that
    grows linearly from 0 to 1 over the steps, else zero vectors (LLaRA's text-to-hybrid curriculum).
    `lower_tag`: the row whose stored lower states these are when another row's prompts and soft prompt are
    the same (delrec+user at projector_at=upper reads delrec's)."""
    run_dir = Path(run_dir)
    log = log or JsonlLog(run_dir / "log.jsonl")
    model = scorer.backbone.model
    if soft_prompt is not None:
        soft_prompt.requires_grad_(False)
    params = trainable_params(model)
    projected, train_users, valid_users = projector or (None, None, None)
    lower_soft = soft_prompt  # the (frozen) soft prompt the lower blocks see
    if projected is not None:
        params |= {f"{projected.kind}_prompt.{k}": p for k, p in projected.named_parameters()}
        lower_soft = projected.base_prompt if projected.at == "upper" else None
    valid = valid[:cfg.max_eval_examples]
    valid_users = valid_users[:len(valid)] if valid_users is not None else None
    fast = scorer  # what training and validation score with; the test pass uses the full model (but see projector)
    # a projected prompt at the input changes what the lower blocks see: no stored lower states for that row
    if cfg.train_layers and cfg.cache_lower and (projected is None or projected.at == "upper"):
        fast = UpperLayerScorer(scorer, first_adapted_block(scorer.backbone, cfg.train_layers), lower_soft)
    # Within one epoch an example is seen once: its lower pass then covers only the candidates scored
    # (target + sampled negatives); over several epochs all of them at once, so no prompt runs twice.
    revisits = fast is not scorer and cfg.steps * cfg.batch_size * cfg.grad_accum > len(train)
    keep = LowerStateFile(fast, lower_soft, cfg.lower_states_dir, log, name, lower_tag) if revisits else None
    train_prompts = {e.prompt for e in train} if revisits else set()
    alloc, lcfg = _allocator_state(model)
    shared = False  # the processes pooled their lower states (torchrun)

    def step_fn(step: int) -> dict:
        nonlocal shared
        model.train()
        total = 0.0
        if revisits and not shared and step * cfg.batch_size * cfg.grad_accum >= len(train):
            # the first epoch is behind: the processes pool their states (a run resumed past it has them
            # from lower_states_dir, complete, and skips this; without that folder each rebuilds its own)
            n = share_across_processes(fast.cache, train_prompts)
            shared = True
            if n:
                log.write(stage=name, event="lower_states_shared", step=step, received=n)
        for micro in range(cfg.grad_accum):
            idx = batch_indices(len(train), cfg.batch_size, step, micro, cfg.grad_accum, seed)
            batch = [train[j] for j in idx]
            if revisits:  # every candidate's lower states at once: one lower pass per example, ever
                fast.prefetch([e.prompt for e in batch], [list(e.candidates) for e in batch], lower_soft)
                keep.save_when_holding(train_prompts)
            batch = sampled_batch(train, idx, cfg.train_negatives, seed, step, micro)
            soft = soft_prompt
            if train_users is not None:
                soft = projected.rows(train_users[idx])
            elif projected is not None:  # delrec+hybrid
                p = min(1.0, step / cfg.steps) if curriculum else 1.0
                soft = projected.for_examples(batch, [example_rng(seed + 1, step, micro, j).random() < p for j in idx])
            scores = with_prior(fast.score([e.prompt for e in batch], [list(e.candidates) for e in batch], soft), batch)
            labels = torch.tensor([e.label for e in batch], device=scores.device)
            loss = F.cross_entropy(scores, labels)
            reg = orthogonal_regulariser(model)
            ((loss + cfg.orth_reg_weight * reg) / cfg.grad_accum).backward()
            total += loss.item() / cfg.grad_accum
        return {"loss": global_mean(total), "orth_reg": float(reg.detach())}

    def post_step(step: int) -> None:
        model.base_model.update_and_allocate(step)

    def evaluate() -> float:
        model.eval()
        soft = soft_prompt if projected is None else projected
        s = score_examples(fast, valid, soft, batch_size=eval_batch_size, desc="valid lsr", users=valid_users)
        return metric(s, [e.label for e in valid])

    def extra_state() -> dict:
        out = {}
        for kind in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            out |= {f"{kind}.{k}": v for k, v in getattr(alloc, kind).items()}
        out["rank_pattern"] = torch.tensor(list(json.dumps(lcfg.rank_pattern).encode()), dtype=torch.uint8)
        return out

    def load_extra(t: dict) -> None:
        for kind in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            setattr(alloc, kind, {k[len(kind) + 1:]: v for k, v in t.items() if k.startswith(kind + ".")})
        lcfg.rank_pattern = json.loads(bytes(t["rank_pattern"].tolist()).decode())

    trainer = Trainer(cfg, params, run_dir, name, log, extra_state, load_extra)
    trainer.fit(step_fn, evaluate, post_step, seed=seed, resume=resume, stop_after=stop_after)
    if keep is not None:
        keep.save_if_grown()
    model.eval()
    if trainer.finished:
        def save(folder: Path) -> None:
            save_adapter(model, folder)
            if projected is not None:
                projected.save(run_dir / projected.file)

        trainer.save_best(run_dir / "adapter", save)
    return trainer.result()
