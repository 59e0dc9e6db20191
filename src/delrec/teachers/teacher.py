"""`Teacher`: a trained recommender with batched, history-aware scoring and top-k, and its files.

A teacher folder holds `model.safetensors` (weights) and `config.json` (model name, catalogue size, the
TeacherConfig it was built with, training info): safetensors + JSON, never pickles.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from delrec import DelrecError
from delrec.config import TeacherConfig
from delrec.device import resolve_device
from delrec.io import atomic_path, atomic_write_text
from delrec.teachers import build_teacher
from delrec.teachers.base import SequentialRecommender, history_mask, pad_histories


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
    def score_batches(self, histories, exclude_history: bool, batch_size: int):
        """Scores [b, n_items] per batch of `batch_size` histories, on the teacher's device."""
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
        return torch.cat([s.cpu() for s in self.score_batches(list(histories), exclude_history, batch_size)])

    def topk(self, histories: Sequence[Sequence[int]], k: int | None = None, *, batch_size: int = 512
             ) -> list[list[int]]:
        """The k best items (dense ids, best first) per history, never an item of that history."""
        k = min(k or self.cfg.topk, self.n_items)
        out: list[list[int]] = []
        for s in self.score_batches(list(histories), True, batch_size):
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
