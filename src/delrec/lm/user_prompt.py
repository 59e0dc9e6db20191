"""A per-user soft prompt (row `delrec+user`, beyond the paper): the stage-1 prompt plus a trained function of
the teacher's representation of the user's history.

The paper's soft prompt is one block shared by every user, so it cannot carry what the teacher knows about
this user; LLM-SRec (arXiv 2502.13909) hands the LM the sequential model's user representation instead. Here
the teacher's final hidden state for the history (`SequentialRecommender.encode`: SASRec's last position,
GRU4Rec's last GRU state, Caser's fused convolutions) goes through a small low-rank projector whose output is
added to the frozen stage-1 vectors:

    soft(u) = P_stage1 + reshape(up(down(norm(h_u))))       up is zero at start: the row starts as delrec

Where the user part enters (`eval.user_at`):
- `input`: spliced at the input like the shared prompt (every backbone). The frozen lower blocks then see a
  trained input, so the row cannot use the stored lower-block states of `stage2.train_layers` and
  back-propagates through every block (expected near stage 1's cost per example; not yet timed).
- `upper`: the lower blocks see the stage-1 prompt (so their states are stored once per example, as for
  delrec), and the projector's output is added to the soft positions' states where the adapted blocks begin
  (decoder-only LMs with `stage2.train_layers` and `stage2.cache_lower`; expected near delrec's stage-2
  cost: the same lower states, one more small matmul). A deep prompt at one layer, in the spirit of P-tuning
  v2, rather than an input prompt.
The user state depends on the history only (never on the target), and it comes from one teacher for every
split (`eval.user_teacher`), so that the projector's input space is the same in training and at test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
from torch import nn

from delrec import DelrecError
from delrec.choices import USER_AT
from delrec.lm.soft_prompt import PerRowSoft, SoftPrompt

FORMAT = "delrec-user-prompt/1"


class UserPrompt(nn.Module):
    def __init__(self, base: SoftPrompt, user_dim: int, rank: int, seed: int = 0, at: str = "input"):
        super().__init__()
        if user_dim < 1 or rank < 1:
            raise DelrecError(f"user prompt: user_dim and eval.user_rank must be >= 1, got {user_dim}, {rank}")
        if at not in USER_AT:
            raise DelrecError(f"eval.user_at: {at!r} is not one of {', '.join(USER_AT)}")
        self.at = at
        self.register_buffer("base", base.weight.detach().float().clone())  # frozen: the stage-1 prompt
        self.norm = nn.LayerNorm(user_dim, elementwise_affine=False)  # teacher states vary in scale by model
        self.down = nn.Linear(user_dim, rank, bias=False)
        self.up = nn.Linear(rank, base.n_soft * base.dim, bias=False)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.down.weight.copy_(torch.randn(rank, user_dim, generator=gen) / user_dim ** 0.5)
            self.up.weight.zero_()

    @property
    def n_soft(self) -> int:
        return int(self.base.shape[0])

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])

    @property
    def user_dim(self) -> int:
        return int(self.down.weight.shape[1])

    @property
    def rank(self) -> int:
        return int(self.down.weight.shape[0])

    def check(self, backbone) -> None:
        if self.dim != backbone.embed_dim:
            raise DelrecError(f"user prompt: width {self.dim} does not match the LM's embedding width "
                              f"{backbone.embed_dim}")

    def offsets(self, users: torch.Tensor) -> torch.Tensor:
        """[B, n_soft, dim] the user part for a batch of [B, user_dim] user states."""
        users = users.to(device=self.base.device, dtype=torch.float32)
        return self.up(self.down(self.norm(users))).view(-1, self.n_soft, self.dim)

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

    def rows(self, users: torch.Tensor) -> UserRows:
        """What the scorer uses for a batch whose row b belongs to user state users[b]."""
        offsets = self.offsets(users)
        if self.at == "upper":
            return UserRows(self, None, offsets)
        return UserRows(self, self.base.unsqueeze(0) + offsets, None)

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        from delrec.io import atomic_path

        meta = {"format": FORMAT, "config": json.dumps({"n_soft": self.n_soft, "dim": self.dim, "at": self.at,
                                                        "user_dim": self.user_dim, "rank": self.rank})}
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> UserPrompt:
        from delrec.io import read_tagged_safetensors

        tensors, meta = read_tagged_safetensors(path, FORMAT, "user prompt",
                                                missing_hint=" (train the delrec+user row first)")
        config = json.loads(meta["config"])
        base = SoftPrompt(config["n_soft"], config["dim"])
        prompt = cls(base, config["user_dim"], config["rank"], at=config.get("at", "input"))
        want = {k: tuple(v.shape) for k, v in prompt.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in tensors.items()}
        if want != got:
            raise DelrecError(f"user prompt: {path} holds tensors {got}, its metadata says {want}")
        prompt.load_state_dict(tensors)
        return prompt.to(device)


class UserRows(PerRowSoft):
    """One batch's user prompts. `input`: a soft tensor per row; `upper`: the stage-1 prompt for every row plus
    per-row `offsets` that the upper-layer scorer (lm/layer_cache.py) adds where the adapted blocks begin."""

    def __init__(self, prompt: UserPrompt, weights: torch.Tensor | None, offsets: torch.Tensor | None):
        self.prompt, self.weights, self.offsets = prompt, weights, offsets

    def row_weight(self, row: int) -> torch.Tensor:
        if self.weights is None:
            raise DelrecError("eval.user_at=upper: the user part enters at the adapted blocks; score with the "
                              "upper-layer scorer (stage2.train_layers, stage2.cache_lower)")
        return self.weights[row]


def user_scorer(scorer, prompt: UserPrompt | None, train_layers: int):
    """The scorer a per-user prompt needs: the full model (`input`) or the adapted blocks over stored lower
    states of the stage-1 prompt (`upper`)."""
    if prompt is None or prompt.at == "input":
        return scorer
    from delrec.lm.adapters import first_adapted_block
    from delrec.lm.layer_cache import UpperLayerScorer

    if not train_layers:
        raise DelrecError("eval.user_at=upper needs stage2.train_layers > 0 (the blocks the user part enters)")
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
