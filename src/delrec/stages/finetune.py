"""Stage 2 (LSR): AdaLoRA on the attention query/value projections, the stage-1 soft prompt frozen.

peft only adds AdaLoRA's orthogonal regulariser when the model computes the loss itself, and its rank
allocator needs `update_and_allocate(step)` after every optimiser step: both are done here explicitly.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import AdaLoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from delrec import DelrecError
from delrec.config import Stage2Config
from delrec.dist import global_mean
from delrec.evaluate import Scorer, ndcg5, score_examples
from delrec.lm.backbone import attention_target_modules
from delrec.lm.blocks import decoder_blocks
from delrec.lm.layer_cache import UpperLayerScorer, share_across_processes
from delrec.lm.lower_store import LowerStateFile
from delrec.lm.soft_prompt import SoftPrompt
from delrec.stages.batches import batch_indices, sampled_batch
from delrec.stages.loop import JsonlLog, Trainer

FULL_STATE = "adapter_full.safetensors"


def add_adalora(backbone, cfg: Stage2Config, seed: int = 0):
    """Wrap the backbone's model in place; returns the peft model. The adapter initialisation is seeded on
    its own, so every process of a distributed run (and a single-process run) starts from the same weights."""
    total = cfg.steps
    tfinal = cfg.tfinal or max(1, total // 5)
    # Full rank for the first 60% of steps: pruning from step total // 10 on made the loss of a 64-example
    # overfit run on SmolLM2 jump back to chance at step 73 of 160 (lr 1e-2), pruning from 90 of 120 did not
    # (benchmarks/BENCHMARKS.md, "Stage 2 can learn").
    tinit = cfg.tinit or max(0, total * 3 // 5)
    if tinit >= total - tfinal:  # peft requires tinit < total_step - tfinal
        tinit = max(0, total - tfinal - 1)
    config = AdaLoraConfig(init_r=cfg.init_r, target_r=cfg.target_r, lora_alpha=cfg.lora_alpha,
                           lora_dropout=cfg.lora_dropout, target_modules=target_modules(backbone, cfg.train_layers),
                           total_step=total, tinit=tinit, tfinal=tfinal, deltaT=cfg.deltaT,
                           orth_reg_weight=cfg.orth_reg_weight,
                           task_type="SEQ_2_SEQ_LM" if backbone.is_encoder_decoder else "CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(backbone.model, config)
    backbone.model = model
    return model


def target_modules(backbone, train_layers: int = 0):
    """The attention query/value projections to adapt: of every block, or (train_layers = N) of the top N."""
    names = attention_target_modules(backbone.model)
    if not train_layers:
        return names
    if backbone.is_encoder_decoder:
        raise DelrecError("stage2.train_layers: only decoder-only LMs; use 0 (all blocks) for encoder-decoders")
    owner, attr = decoder_blocks(backbone.model)
    total = len(getattr(owner, attr))
    if train_layers > total:
        raise DelrecError(f"stage2.train_layers: {train_layers} is more than the model's {total} blocks")
    blocks = "|".join(str(i) for i in range(total - train_layers, total))
    return rf"(.*\.)?{attr}\.({blocks})\.(.*\.)?({'|'.join(names)})"


def first_adapted_block(backbone, train_layers: int) -> int:
    owner, attr = decoder_blocks(backbone.model)
    return len(getattr(owner, attr)) - train_layers


def orthogonal_regulariser(model) -> torch.Tensor:
    """Mean of ‖AAᵀ − I‖_F and ‖BᵀB − I‖_F over the trainable adapter (as peft's AdaLoraModel.forward)."""
    reg, n = None, 0
    for name, p in model.named_parameters():
        if p.requires_grad and ("lora_A" in name or "lora_B" in name):
            cov = p @ p.T if "lora_A" in name else p.T @ p
            term = torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], device=p.device, dtype=p.dtype))
            reg = term if reg is None else reg + term
            n += 1
    return reg / n if n else torch.zeros(())


def trainable_params(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(model, folder: Path) -> None:
    """peft's `save_pretrained` (for other tools) plus the unresized adapter tensors, which reload exactly:
    peft's AdaLoRA reload of a pruned rank pattern is not reliable across versions."""
    from delrec.io import atomic_path

    with warnings.catch_warnings():
        # AdaLoRA prunes some modules to rank 0; peft mistakes their (0, n) tensors for unsaved ZeRO-3 shards.
        warnings.filterwarnings("ignore", message=r".*LoRA tensor\(s\) have invalid shape.*")
        model.save_pretrained(str(folder))
    with atomic_path(Path(folder) / FULL_STATE) as tmp:
        save_file({n: p.detach().contiguous().cpu() for n, p in trainable_params(model).items()}, str(tmp))


def load_adapter(backbone, cfg: Stage2Config, folder: Path):
    """Rebuild the AdaLoRA model of `cfg` on `backbone` and load the saved adapter tensors into it."""
    model = add_adalora(backbone, cfg)
    path = Path(folder) / FULL_STATE
    if not path.exists():
        raise DelrecError(f"{folder}: no {FULL_STATE}; was the adapter trained by delrec?")
    state = load_file(str(path))
    params = trainable_params(model)
    if set(state) != set(params):
        raise DelrecError(f"{path}: adapter tensors do not match the model built from the run's stage2 config")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n])
    model.requires_grad_(False)
    return model.eval()


def _allocator_state(model) -> tuple:
    alloc = model.base_model.rankallocator
    return alloc, model.base_model.peft_config[model.base_model.trainable_adapter_name]


def finetune(scorer: Scorer, soft_prompt: SoftPrompt | None, train: list, valid: list, cfg: Stage2Config,
             run_dir: Path, *, seed: int, resume: bool = False, stop_after: int | None = None,
             log: JsonlLog | None = None, eval_batch_size: int = 8, name: str = "stage2",
             metric=ndcg5) -> dict:
    """Train AdaLoRA adapters (already added with `add_adalora`); select by validation NDCG@5 (`metric`)."""
    run_dir = Path(run_dir)
    log = log or JsonlLog(run_dir / "log.jsonl")
    model = scorer.backbone.model
    if soft_prompt is not None:
        soft_prompt.requires_grad_(False)
    params = trainable_params(model)
    valid = valid[:cfg.max_eval_examples]
    fast = scorer  # what training and validation score with; the test pass always uses the full model
    if cfg.train_layers and cfg.cache_lower:
        fast = UpperLayerScorer(scorer, first_adapted_block(scorer.backbone, cfg.train_layers), soft_prompt)
    # Within one epoch an example is seen once: its lower pass then covers only the candidates scored
    # (target + sampled negatives); over several epochs all of them at once, so no prompt runs twice.
    revisits = fast is not scorer and cfg.steps * cfg.batch_size * cfg.grad_accum > len(train)
    keep = LowerStateFile(fast, soft_prompt, cfg.lower_states_dir, log, name) if revisits else None
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
                fast.prefetch([e.prompt for e in batch], [list(e.candidates) for e in batch], soft_prompt)
                keep.save_when_holding(train_prompts)
            batch = sampled_batch(train, idx, cfg.train_negatives, seed, step, micro)
            scores = fast.score([e.prompt for e in batch], [list(e.candidates) for e in batch], soft_prompt)
            labels = torch.tensor([e.label for e in batch], device=scores.device)
            loss = F.cross_entropy(scores.float(), labels)
            reg = orthogonal_regulariser(model)
            ((loss + cfg.orth_reg_weight * reg) / cfg.grad_accum).backward()
            total += loss.item() / cfg.grad_accum
        return {"loss": global_mean(total), "orth_reg": float(reg.detach())}

    def post_step(step: int) -> None:
        model.base_model.update_and_allocate(step)

    def evaluate() -> float:
        model.eval()
        s = score_examples(fast, valid, soft_prompt, batch_size=eval_batch_size, desc="valid lsr")
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
        trainer.save_best(run_dir / "adapter", lambda folder: save_adapter(model, folder))
    return trainer.result()
