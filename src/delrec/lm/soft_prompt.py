"""The DELRec soft prompt: one block of `n_soft` trainable vectors of the LM's embedding width.

It is a module of our own rather than peft prompt tuning because peft cannot hold prompt tuning and (Ada)LoRA
in one model, and DELRec trains the soft prompt in stage 1 and reuses it, frozen, next to AdaLoRA in stage 2.
The scorer splices `weight` into `inputs_embeds` at the template's `[SOFT]` slot.
"""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from delrec import DelrecError
from delrec.choices import SOFT_INITS

FORMAT = "delrec-soft-prompt/1"


class SoftPrompt(nn.Module):
    def __init__(self, n_soft: int, dim: int, init: str = "normal"):
        super().__init__()
        if n_soft < 1 or dim < 1:
            raise DelrecError(f"soft prompt: n_soft and dim must be >= 1, got {n_soft} x {dim}")
        # Kept in fp32 whatever the backbone's dtype: the optimiser updates it in full precision and the
        # scorer casts it to the embedding dtype when splicing (the cast is differentiable).
        self.weight = nn.Parameter(torch.zeros(n_soft, dim))
        self.init = init

    @property
    def n_soft(self) -> int:
        return int(self.weight.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def forward(self) -> torch.Tensor:
        return self.weight

    @classmethod
    def create(cls, n_soft: int, backbone, init: str = "vocab", seed: int = 0) -> SoftPrompt:
        """vocab: rows copied from randomly chosen vocabulary embeddings (the paper); normal: N(0, 1) (the
        released code). Seeded with its own generator, so the global RNG is left alone."""
        if init not in SOFT_INITS:
            raise DelrecError(f"lm.soft_init: {init!r} is not one of {', '.join(SOFT_INITS)}")
        embedding = backbone.input_embeddings()
        table = embedding.weight
        prompt = cls(n_soft, int(table.shape[1]), init)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            if init == "vocab":
                # Only rows the tokenizer can produce: models often pad the embedding table past the vocab.
                n_rows = min(int(table.shape[0]), len(backbone.tokenizer))
                rows = torch.randint(0, n_rows, (n_soft,), generator=gen)
                # the module's output, not its weight: Gemma scales embeddings by sqrt(width) in forward,
                # and the soft vectors are spliced where that output goes
                prompt.weight.copy_(embedding(rows.to(table.device)).detach().float().cpu())
            else:
                prompt.weight.copy_(torch.randn(n_soft, prompt.dim, generator=gen))
        return prompt.to(table.device)

    def save(self, path: str | os.PathLike) -> None:
        """safetensors file; its config (n_soft, dim, init) rides in the file's metadata. Atomic."""
        from safetensors.torch import save_file

        from delrec.io import atomic_path

        meta = {"format": FORMAT, "config": json.dumps({"n_soft": self.n_soft, "dim": self.dim,
                                                        "init": self.init})}
        with atomic_path(path) as tmp:
            save_file({"weight": self.weight.detach().float().cpu().contiguous()}, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> SoftPrompt:
        from delrec.io import read_tagged_safetensors

        tensors, meta = read_tagged_safetensors(path, FORMAT, "soft prompt",
                                                missing_hint=" (run stage 1 first, or check the path)")
        weight = tensors["weight"]
        config = json.loads(meta["config"])
        if list(weight.shape) != [config["n_soft"], config["dim"]]:
            raise DelrecError(f"soft prompt: {path} holds a {list(weight.shape)} tensor but its metadata says "
                              f"{config['n_soft']} x {config['dim']}")
        prompt = cls(config["n_soft"], config["dim"], config.get("init", "normal"))
        with torch.no_grad():
            prompt.weight.copy_(weight)
        return prompt.to(device)

    def check(self, backbone) -> None:
        if self.dim != backbone.embed_dim:
            raise DelrecError(f"soft prompt: width {self.dim} does not match the LM's embedding width "
                              f"{backbone.embed_dim} (was it trained with another lm.backbone?)")

    def extra_repr(self) -> str:
        return f"n_soft={self.n_soft}, dim={self.dim}, init={self.init!r}"


class PerRowSoft:
    """What the scorer splices when every row of a batch has its own soft tensor: it asks only for `n_soft`,
    `check` (both from the prompt the rows come from) and `row_weight(row)`."""

    prompt: SoftPrompt  # or anything with `n_soft` and `check` (lm/teacher_prompts.py)

    @property
    def n_soft(self) -> int:
        return self.prompt.n_soft

    def check(self, backbone) -> None:
        self.prompt.check(backbone)

    def row_weight(self, row: int) -> torch.Tensor:
        raise NotImplementedError


class RowSoftPrompt(PerRowSoft):
    """A soft prompt whose rows in a batch splice their own tensor: `views[g]` for the rows of group g.

    Each view is a differentiable copy of one prompt's weight, so after one backward pass over a batch that
    mixes groups (stage 1: TA rows and RPS rows), the gradient w.r.t. `views[g]` is that group's loss
    gradient alone: rows never see each other."""

    def __init__(self, prompt: SoftPrompt, groups: list[int]):
        self.prompt, self.groups = prompt, list(groups)
        self.views = [prompt.weight.clone() for _ in range(max(self.groups) + 1)]

    def row_weight(self, row: int) -> torch.Tensor:
        return self.views[self.groups[row]]
