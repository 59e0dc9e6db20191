"""Teacher training, evaluation, top-k export and `delrec teach`.

Training data are ALL prefixes (seq[:t], seq[t]) of `split.train_sequences`, so no validation or test target
position is ever a training target (leave-one-out: train_sequences[u] = seq[:-2]). They are packed into
windows of max_len items (`training_examples`): causal models (SASRec, GRU4Rec) score every prefix of a window
in one pass, exactly as separate calls on each prefix would; every target occurs once per epoch, with all of
seq[:t] as context when t <= max_len and at least max_len - stride + 1 items otherwise (stride defaults to
max_len // 2; `train_stride=1` is RecBole's one-window-per-prefix scheme, ~20x slower on ML-100K). Loss:
full-softmax cross-entropy over the catalogue (or `loss=bce`: one sampled negative). AdamW; early stopping on
validation NDCG@10 with full ranking, history items excluded; the best epoch is restored. Checkpoints are
safetensors + JSON, never pickles.

Top-k export (`topk.json`, raw ids): {"model", "k", "dataset", "fingerprint", "splits": {"train" | "valid" |
"test": [{"user": raw user, "history_len": n, "topk": [raw item ids]}]}}: the teacher's top-k for the
history `sequence[:history_len]` of that user, history items excluded. `read_topk` maps it back to dense ids.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm

from delrec import DelrecError
from delrec.config import RunConfig, TeacherConfig
from delrec.data.candidates import CandidateSet
from delrec.data.sequences import Dataset
from delrec.data.split import Example, Split
from delrec.device import resolve_device
from delrec.io import atomic_path, atomic_write_text
from delrec.metrics import ndcg_hr_full, ranks_from_scores, summarize
from delrec.teachers import build_teacher
from delrec.teachers.base import SequentialRecommender, history_mask, pad_histories


def training_examples(train_sequences: Sequence[Sequence[int]], max_len: int, stride: int = 1):
    """Windows over the training sequences in which every target position t >= 1 of every sequence is predicted
    exactly once, from a suffix of seq[:t] (all of it when t <= max_len, else at least max_len - stride + 1
    items; stride 1 = one window per prefix with its full max_len context, RecBole's scheme).

    Returns windows [W, max_len] (ids +1, left-padded), targets [W, max_len] (dense id of the item that
    follows the history ending at that column; -1 = no loss there), positions [W, max_len] (t, or -1) and
    rows [W] (index into train_sequences).
    """
    L, stride = max_len, max(1, min(stride, max_len))
    windows, targets, positions, rows = [], [], [], []
    for u, seq in enumerate(train_sequences):
        n = len(seq)
        if n < 2:
            continue
        arr = np.asarray(seq, np.int64)
        first = min(L, n - 1)
        prev = 0
        for end in [first, *range(n - 1, first, -stride)[::-1]]:  # end: exclusive end of the history
            start = max(0, end - L)
            w, tg, pos = np.zeros(L, np.int64), np.full(L, -1, np.int64), np.full(L, -1, np.int64)
            off = L - (end - start)
            w[off:] = arr[start:end] + 1
            t = np.arange(prev + 1, end + 1)  # targets covered here; predicted at the column of item t-1
            tg[off + t - 1 - start], pos[off + t - 1 - start] = arr[t], t
            windows.append(w), targets.append(tg), positions.append(pos), rows.append(u)
            prev = end
    if not windows:
        raise DelrecError("no teacher training examples: every training sequence has fewer than 2 items")
    return tuple(torch.from_numpy(np.stack(x)) for x in (windows, targets, positions)) + (torch.tensor(rows),)


class Teacher:
    """A trained recommender with batched, history-aware scoring; what the LM stages consume."""

    def __init__(self, name: str, model: SequentialRecommender, cfg: TeacherConfig, info: dict | None = None):
        self.name, self.model, self.cfg, self.info = name, model, cfg, info or {}

    @property
    def n_items(self) -> int:
        return self.model.n_items

    @property
    def device(self) -> torch.device:
        return next((t.device for t in self.model.state_dict().values()), torch.device("cpu"))

    @torch.no_grad()
    def _batches(self, histories, exclude_history: bool, batch_size: int):
        self.model.eval()
        for i in range(0, len(histories), batch_size):
            chunk = histories[i:i + batch_size]
            s = self.model(pad_histories(chunk, self.model.max_len, self.device)).float()
            if exclude_history:
                s = s.masked_fill(history_mask(chunk, self.n_items, self.device), float("-inf"))
            yield s

    def scores(self, histories: Sequence[Sequence[int]], *, exclude_history: bool = False,
               batch_size: int = 512) -> torch.Tensor:
        """Scores [N, n_items] (CPU float) for dense-id histories; history items -inf if `exclude_history`."""
        if not len(histories):
            return torch.zeros(0, self.n_items)
        return torch.cat([s.cpu() for s in self._batches(list(histories), exclude_history, batch_size)])

    def topk(self, histories: Sequence[Sequence[int]], k: int | None = None, *, batch_size: int = 512
             ) -> list[list[int]]:
        """The k best items (dense ids, best first) per history, never an item of that history."""
        k = min(k or self.cfg.topk, self.n_items)
        out: list[list[int]] = []
        for s in self._batches(list(histories), True, batch_size):
            vals, idx = s.topk(k, dim=1)
            out += [[i for i, v in zip(r, vr) if v != float("-inf")] for r, vr in zip(idx.tolist(), vals.tolist())]
        return out

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        device = self.device
        with atomic_path(directory / "model.safetensors") as tmp:
            save_model(self.model.cpu(), str(tmp))
        self.model.to(device)
        meta = {"name": self.name, "n_items": self.n_items, "teacher": dataclasses.asdict(self.cfg), "info": self.info}
        atomic_write_text(directory / "config.json", json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> Teacher:
        directory = Path(directory)
        try:
            meta = json.loads((directory / "config.json").read_text())
        except FileNotFoundError:
            raise DelrecError(f"{directory}: no teacher checkpoint (config.json missing)") from None
        known = {f.name for f in dataclasses.fields(TeacherConfig)}
        cfg = TeacherConfig(**{k: v for k, v in meta["teacher"].items() if k in known})
        model = build_teacher(meta["name"], meta["n_items"], cfg)
        load_model(model, str(directory / "model.safetensors"))
        return cls(meta["name"], model.to(resolve_device(device, "teacher.device")).eval(), cfg, meta.get("info"))


# ---------------------------------------------------------------------------------------------- evaluation
def full_ranks(teacher: Teacher, histories, targets, *, batch_size: int = 512) -> np.ndarray:
    """1-based rank of each target over the whole catalogue, history items excluded, ties pessimistic."""
    ranks, start = [], 0
    for s in teacher._batches(list(histories), True, batch_size):
        t = torch.as_tensor(targets[start:start + len(s)], device=s.device)
        ranks.append((s >= s.gather(1, t[:, None])).sum(1).cpu().numpy())
        start += len(s)
    return np.concatenate(ranks) if ranks else np.zeros(0, np.int64)


def candidate_ranks(teacher: Teacher, sets: list[CandidateSet], *, batch_size: int = 512) -> np.ndarray:
    scores = teacher.scores([c.history for c in sets], batch_size=batch_size)
    cand = torch.tensor([c.candidates for c in sets], dtype=torch.long)
    return ranks_from_scores(scores.gather(1, cand).numpy(), [c.target_index for c in sets])


def evaluate_teacher(teacher: Teacher, examples: Sequence[Example] | None = None,
                     candidates: list[CandidateSet] | None = None, *, n_boot: int = 1000) -> dict:
    """Row for metrics.json: candidate HR@1/HR@5/NDCG@5 (+n, ci95) and full-ranking `full/hr@10`, `full/ndcg@10`.
    Full ranking uses `examples`, or the candidate sets' (history, target) when `examples` is None."""
    row: dict = {}
    if candidates:
        row.update(summarize(candidate_ranks(teacher, candidates), n_boot=n_boot))
    pairs = examples if examples is not None else candidates or []
    if pairs:
        row.update(ndcg_hr_full(full_ranks(teacher, [e.history for e in pairs], [e.target for e in pairs])))
    return row


def _valid_ndcg(teacher: Teacher, examples: Sequence[Example]) -> float:
    return ndcg_hr_full(full_ranks(teacher, [e.history for e in examples], [e.target for e in examples]))[
        "full/ndcg@10"]


# ------------------------------------------------------------------------------------------------ training
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
        val = _valid_ndcg(teacher, split.valid) if split.valid else -total
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


# ------------------------------------------------------------------------------------------ top-k export
def export_topk(teacher: Teacher, dataset: Dataset, split: Split, path: str | Path, k: int) -> None:
    raw_u, raw_i = dataset.users, dataset.catalog.raw_ids
    splits = {}
    for part in ("train", "valid", "test"):
        examples = getattr(split, part)
        tops = teacher.topk([e.history for e in examples], k)
        splits[part] = [{"user": raw_u[e.user], "history_len": len(e.history), "topk": [raw_i[i] for i in t]}
                        for e, t in zip(examples, tops)]
    doc = {"model": teacher.name, "k": k, "dataset": dataset.name, "fingerprint": dataset.fingerprint(),
           "splits": splits}
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n")


def read_topk(path: str | Path, dataset: Dataset) -> dict[str, dict[tuple[int, int], list[int]]]:
    """topk.json -> {split: {(dense user index, history_len): [dense item ids]}}."""
    doc = json.loads(Path(path).read_text())
    if doc.get("fingerprint") != dataset.fingerprint():
        raise DelrecError(f"{path}: exported for another dataset (fingerprint {doc.get('fingerprint')}, "
                          f"loaded {dataset.fingerprint()}); rerun `delrec teach`")
    users = {u: i for i, u in enumerate(dataset.users)}
    cat = dataset.catalog
    return {part: {(users[r["user"]], r["history_len"]): [cat.dense(x) for x in r["topk"]] for r in rows}
            for part, rows in doc["splits"].items()}


# ------------------------------------------------------------------------------------------ delrec teach
def teach_command(cfg: RunConfig) -> dict:
    """`delrec teach`: the pipeline up to the teachers, on the same candidate files as `delrec run`."""
    from delrec.pipeline import run_command

    return run_command(cfg, until="teach")
