"""Teacher training (docs/method.md §2): full-softmax cross-entropy over the catalogue (or `loss=bce`: one
sampled negative), AdamW, early stopping on validation NDCG@10 with full ranking (history items excluded), the
best epoch restored.

Training data are ALL prefixes (seq[:t], seq[t]) of `split.train_sequences`, so no validation or test target
position is ever a training target (leave-one-out: train_sequences[u] = seq[:-2]); `windows.py` packs them.
"""

from __future__ import annotations

import copy
import random
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from delrec.config import TeacherConfig
from delrec.data.sequences import Dataset
from delrec.data.split import Split
from delrec.device import resolve_device
from delrec.teachers import build_teacher
from delrec.teachers.base import SequentialRecommender
from delrec.teachers.evaluation import full_ndcg10
from delrec.teachers.teacher import Teacher
from delrec.teachers.windows import training_examples


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def flush_denormals():
    """Treat subnormal floats as 0 while training: early CPU steps otherwise run up to 50x slower."""
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


def train_teacher(name: str, cfg: TeacherConfig, dataset: Dataset, split: Split, *, seed: int,
                  out_dir: Path | None = None, progress: bool = True) -> Teacher:
    """Train `name` on every prefix of `split.train_sequences`; early-stop on split.valid; save to `out_dir`."""
    with flush_denormals():
        return _train(name, cfg, dataset, split, seed=seed, out_dir=out_dir, progress=progress)


def _train(name, cfg, dataset, split, *, seed, out_dir, progress) -> Teacher:
    n_items, t0 = dataset.n_items, time.perf_counter()
    seed_everything(seed)
    device = resolve_device(cfg.device, "teacher.device")
    model = build_teacher(name, n_items, cfg)
    if not model.trainable:  # popularity: counted, not trained
        teacher = Teacher(name, model.fit(split.train_sequences).to(device), cfg, {"seconds": 0.0})
        if out_dir is not None:
            teacher.save(out_dir)
        return teacher
    windows, targets, _, _ = training_examples(split.train_sequences, cfg.max_len,
                                              cfg.train_stride or max(1, cfg.max_len // 2))
    n_targets = int((targets >= 0).sum())
    model.to(device)
    teacher = Teacher(name, model, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    best, best_epoch, best_state, bad, log = -1.0, 0, None, 0, []
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"teacher {name}", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total, perm = 0.0, torch.randperm(len(windows), generator=gen)
        for i in range(0, len(perm), cfg.batch_size):
            w, y = windows[perm[i:i + cfg.batch_size]], targets[perm[i:i + cfg.batch_size]]
            first = int((w > 0).any(0).int().argmax())  # drop columns that are padding in every row
            loss = _loss(model, w[:, first:].to(device), y[:, first:].to(device), cfg.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * int((y >= 0).sum())
        val = full_ndcg10(teacher, split.valid) if split.valid else -total
        log.append({"epoch": epoch, "loss": total / n_targets, "valid_ndcg@10": val,
                    "seconds": round(time.perf_counter() - t0, 2)})
        bar.set_postfix(loss=f"{total / n_targets:.4f}", val=f"{val:.4f}", best=f"{max(best, val):.4f}")
        if val > best:
            best, best_epoch, bad = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    bar.close()
    model.load_state_dict(best_state)
    teacher.info = {"best_epoch": best_epoch, "best_valid_ndcg@10": best, "epochs_run": len(log),
                    "train_examples": n_targets, "train_windows": len(windows), "seed": seed, "device": str(device),
                    "seconds": round(time.perf_counter() - t0, 2), "log": log}
    if out_dir is not None:
        teacher.save(out_dir)
    return teacher


def _loss(model: SequentialRecommender, windows: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean loss over every (window column, target) pair with a target; causal models read each window once."""
    sel = targets >= 0
    if model.causal:
        hidden = model.encode_all(windows)[sel]
    else:  # the history ending at each column, as its own row of the model's context length
        K = model.max_len
        hidden = model.encode(F.pad(windows, (K - 1, 0)).unfold(1, K, 1)[sel])
    logits, y = model.score(hidden), targets[sel]
    if kind == "ce":
        return F.cross_entropy(logits, y)
    neg = (y + torch.randint(1, model.n_items, y.shape, device=y.device)) % model.n_items  # never the target
    pos_s, neg_s = logits.gather(1, y[:, None]), logits.gather(1, neg[:, None])
    return F.softplus(-pos_s).mean() + F.softplus(neg_s).mean()  # = BCE(pos, 1) + BCE(neg, 0)
