"""Prompts that carry the teacher's own vectors into the LM (beyond the paper): `delrec+user` and `delrec+hybrid`.

The paper's soft prompt is one block shared by every user, so it cannot carry what the teacher knows about
this user or these items. Two rows hand the LM the teacher's vectors through small trained projectors:

- `delrec+user` (UserPrompt; LLM-SRec, arXiv 2502.13909): the teacher's final hidden state of the history
  (`SequentialRecommender.encode`) becomes a per-user offset of the frozen stage-1 prompt,
  `P_stage1 + reshape(up(down(norm(h_u))))`.
- `delrec+hybrid` (HybridPrompt; LLaRA, arXiv 2312.02445): one extra vector after each history title,
  `up(down(norm(e_i)))` of the teacher's item vector (`SequentialRecommender.item_vectors`), spliced at the
  prompt's ITEM slots; the soft prompt stays the stage-1 one.

`up` starts at zero, so each row starts as delrec (the hybrid slots as zero vectors). Where the projected part
enters (`eval.projector_at`):
- `input`: at the input (every backbone). The frozen lower blocks then see a trained input, so the row cannot
  use the stored lower-block states of `stage2.train_layers` and back-propagates through every block
  (expected near stage 1's cost per example; not yet timed).
- `upper`: the lower blocks see the stage-1 prompt and zero slots, so their states are stored once per example
  as for delrec, and the projected part is added to those positions' states where the adapted blocks begin
  (decoder-only, `stage2.train_layers` and `cache_lower`): a deep prompt at one layer, in the spirit of
  P-tuning v2, at expected near delrec's stage-2 cost.
The teacher's vectors depend on the history and the catalogue only (never on a target), and come from one
teacher for every split (`eval.projector_teacher`), so a projector reads the same space in training and at test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
from torch import nn

from delrec import DelrecError
from delrec.choices import PROJECTOR_AT
from delrec.lm.soft_prompt import PerRowSoft, SoftPrompt

FORMAT = "delrec-teacher-prompt/1"


class TeacherProjected(nn.Module):
    """The frozen stage-1 prompt, a teacher-vector width and a low-rank projector to `n_out` LM vectors."""

    kind = ""
    file = ""

    def __init__(self, base: SoftPrompt, in_dim: int, n_out: int, rank: int, seed: int = 0, at: str = "input"):
        super().__init__()
        if in_dim < 1 or rank < 1:
            raise DelrecError(f"{self.kind} prompt: the teacher width and eval.projector_rank must be >= 1, got "
                              f"{in_dim}, {rank}")
        if at not in PROJECTOR_AT:
            raise DelrecError(f"eval.projector_at: {at!r} is not one of {', '.join(PROJECTOR_AT)}")
        self.at, self.n_out = at, n_out
        self.register_buffer("base", base.weight.detach().float().clone())  # frozen: the stage-1 prompt
        self.norm = nn.LayerNorm(in_dim, elementwise_affine=False)  # teacher vectors vary in scale by model
        self.down = nn.Linear(in_dim, rank, bias=False)
        self.up = nn.Linear(rank, n_out * base.dim, bias=False)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.down.weight.copy_(torch.randn(rank, in_dim, generator=gen) / in_dim ** 0.5)
            self.up.weight.zero_()

    @property
    def n_soft(self) -> int:
        return int(self.base.shape[0])

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])

    def check(self, backbone) -> None:
        if self.dim != backbone.embed_dim:
            raise DelrecError(f"{self.kind} prompt: width {self.dim} does not match the LM's embedding width "
                              f"{backbone.embed_dim}")

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_dim] -> [B, n_out, dim]."""
        x = x.to(device=self.base.device, dtype=torch.float32)
        return self.up(self.down(self.norm(x))).view(-1, self.n_out, self.dim)

    @property
    def base_prompt(self) -> SoftPrompt:
        """The frozen stage-1 prompt as a SoftPrompt (what `upper` feeds the lower blocks); one object, so the
        stored lower states recognise it."""
        prompt = self.__dict__.get("_base_prompt")  # not a submodule: its weight is no parameter of this one
        if prompt is None or prompt.weight.device != self.base.device:
            prompt = SoftPrompt(self.n_soft, self.dim)
            with torch.no_grad():
                prompt.weight.copy_(self.base)
            self.__dict__["_base_prompt"] = prompt = prompt.requires_grad_(False).to(self.base.device)
        return prompt

    def _config(self) -> dict:
        return {"kind": self.kind, "n_soft": self.n_soft, "dim": self.dim, "at": self.at,
                "in_dim": int(self.down.weight.shape[1]), "rank": int(self.down.weight.shape[0])}

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        from delrec.io import atomic_path

        tensors = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT, "config": json.dumps(self._config())})

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu"):
        from delrec.io import read_tagged_safetensors

        tensors, meta = read_tagged_safetensors(path, FORMAT, f"{cls.kind} prompt",
                                                missing_hint=f" (train the delrec+{cls.kind} row first)")
        c = json.loads(meta["config"])
        if c.get("kind") != cls.kind:
            raise DelrecError(f"{cls.kind} prompt: {path} holds a {c.get('kind')!r} prompt")
        prompt = cls._empty(c, tensors)
        want = {k: tuple(v.shape) for k, v in prompt.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in tensors.items()}
        if want != got:
            raise DelrecError(f"{cls.kind} prompt: {path} holds tensors {got}, its metadata says {want}")
        prompt.load_state_dict(tensors)
        return prompt.to(device)


class UserPrompt(TeacherProjected):
    kind, file = "user", "user_prompt.safetensors"

    def __init__(self, base: SoftPrompt, user_dim: int, rank: int, seed: int = 0, at: str = "input"):
        super().__init__(base, user_dim, base.n_soft, rank, seed, at)

    @classmethod
    def _empty(cls, c: dict, tensors: dict) -> UserPrompt:
        return cls(SoftPrompt(c["n_soft"], c["dim"]), c["in_dim"], c["rank"], at=c["at"])

    def rows(self, users: torch.Tensor) -> ProjectedRows:
        """What the scorer uses for a batch whose row b belongs to user state users[b]."""
        offsets = self.project(users)
        if self.at == "upper":
            return ProjectedRows(self, soft_offsets=offsets)
        return ProjectedRows(self, soft=self.base.unsqueeze(0) + offsets)


class HybridPrompt(TeacherProjected):
    kind, file = "hybrid", "hybrid_prompt.safetensors"

    def __init__(self, base: SoftPrompt, items: torch.Tensor, rank: int, seed: int = 0, at: str = "input"):
        super().__init__(base, int(items.shape[1]), 1, rank, seed, at)
        self.register_buffer("items", items.detach().float().clone())  # frozen: the teacher's item vectors

    @classmethod
    def _empty(cls, c: dict, tensors: dict) -> HybridPrompt:
        return cls(SoftPrompt(c["n_soft"], c["dim"]), torch.zeros_like(tensors["items"]), c["rank"], at=c["at"])

    def for_examples(self, examples, keep: Sequence[bool] | None = None) -> ProjectedRows:
        """Each example's slot vectors (its `slot_items`, oldest first); a row whose `keep` is False gets zero
        vectors (the curriculum's text-only rows)."""
        counts = [len(e.slot_items) for e in examples]
        ids = [i for e in examples for i in e.slot_items]
        flat = self.project(self.items[ids])[:, 0] if ids else self.base.new_zeros(0, self.dim)  # one pass a batch
        vectors = [v if keep is None or keep[i] else torch.zeros_like(v) for i, v in enumerate(flat.split(counts))]
        if self.at == "upper":
            return ProjectedRows(self, slot_offsets=vectors)
        return ProjectedRows(self, slots=vectors)


class ProjectedRows(PerRowSoft):
    """One batch of a teacher-projected prompt. At the input: `row_weight(b)` (the soft vectors of row b) and
    `slot_inputs(b)` (its ITEM slots' vectors, lm/scoring.py); at `upper`: the stage-1 prompt and zero slots at
    the input, and `soft_offsets` / `slot_offsets` that the upper-layer scorer (lm/layer_cache.py) adds where
    the adapted blocks begin."""

    def __init__(self, prompt: TeacherProjected, *, soft=None, slots=None, soft_offsets=None, slot_offsets=None):
        self.prompt, self.soft, self.slots = prompt, soft, slots
        self.soft_offsets, self.slot_offsets = soft_offsets, slot_offsets

    @property
    def upper(self) -> bool:
        return self.prompt.at == "upper"

    def row_weight(self, row: int) -> torch.Tensor:
        if self.upper:
            raise DelrecError("eval.projector_at=upper: the projected part enters at the adapted blocks; score "
                              "with the upper-layer scorer (stage2.train_layers, stage2.cache_lower)")
        return self.prompt.base if self.soft is None else self.soft[row]

    def slot_inputs(self, row: int) -> torch.Tensor | None:
        return None if self.slots is None else self.slots[row]


def load_projector(folder, hybrid: bool, device="cpu") -> TeacherProjected:
    """A trained delrec+user (hybrid False) or delrec+hybrid prompt from its stage-2 folder."""
    from pathlib import Path

    kind = HybridPrompt if hybrid else UserPrompt
    return kind.load(Path(folder) / kind.file, device)


def projector_scorer(scorer, prompt: TeacherProjected | None, train_layers: int):
    """The scorer a teacher-projected prompt needs: the full model (`input`) or the adapted blocks over stored
    lower states of the stage-1 prompt (`upper`)."""
    if prompt is None or prompt.at == "input":
        return scorer
    from delrec.lm.adapters import first_adapted_block
    from delrec.lm.layer_cache import UpperLayerScorer

    if not train_layers:
        raise DelrecError("eval.projector_at=upper needs stage2.train_layers > 0 (the blocks the part enters)")
    return UpperLayerScorer(scorer, first_adapted_block(scorer.backbone, train_layers), prompt.base_prompt)


@torch.no_grad()
def user_states(teacher, histories: Sequence[Sequence[int]], batch_size: int = 512) -> torch.Tensor:
    """[N, hidden] the teacher's representation of each history (CPU float); the history only, no target."""
    from delrec.teachers.base import pad_histories

    model = teacher.model
    model.eval()
    out = [model.encode(pad_histories(list(histories[i:i + batch_size]), model.max_len, teacher.device)).float().cpu()
           for i in range(0, len(histories), batch_size)]
    if not out:
        raise DelrecError("user prompt: no histories to encode")
    return torch.cat(out)


def item_vectors(teacher) -> torch.Tensor:
    """[n_items, hidden] the teacher's item vectors (CPU float), by dense item id."""
    with torch.no_grad():
        return teacher.model.item_vectors().detach().float().cpu()
