"""AdaLoRA adapters on a backbone: add them (seeded, optionally only on the top `train_layers` blocks), their
trainable tensors and orthogonal regulariser, and their files (save, and load for inference). Stage 2 trains
them (`stages/finetune.py`); steps and recommend load a trained one without importing the training code.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from peft import AdaLoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from delrec import DelrecError
from delrec.config import Stage2Config
from delrec.lm.backbone import attention_target_modules
from delrec.lm.blocks import decoder_blocks

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
