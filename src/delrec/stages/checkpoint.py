"""Single-file training checkpoints in safetensors: weights, optimiser state, RNG, loop state.

Nothing here unpickles: tensors go through safetensors, everything else through JSON metadata. The file is
written beside the old one and renamed over it, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from delrec.io import atomic_path, read_tagged_safetensors

FORMAT = "delrec-checkpoint-1"


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    path = Path(path)
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={"format": FORMAT, "meta": json.dumps(meta)})
        if path.exists():  # keep one older copy: a later corruption of the newest still leaves a way back
            os.replace(path, path.with_suffix(".prev.safetensors"))


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    prev = Path(path).with_suffix(".prev.safetensors")
    hint = f"; the previous checkpoint {prev} is intact" if prev.exists() else ""
    tensors, header = read_tagged_safetensors(path, FORMAT, "checkpoint", corrupt_hint=hint)
    return tensors, json.loads(header["meta"])


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict, list]:
    """Flatten an optimiser's per-parameter state into named tensors (+ JSON-able group settings)."""
    tensors, groups = {}, []
    sd = opt.state_dict()
    for g in sd["param_groups"]:
        groups.append({k: v for k, v in g.items() if k != "params"} | {"params": g["params"]})
    for idx, st in sd["state"].items():
        for key, val in st.items():
            t = val if torch.is_tensor(val) else torch.tensor(val)
            tensors[f"optim.{idx}.{key}"] = t
    return tensors, groups


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict, groups: list) -> None:
    state = {}
    for idx in range(sum(len(g["params"]) for g in groups)):
        prefix = f"optim.{idx}."
        st = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if st:
            state[idx] = st
    opt.load_state_dict({"state": state, "param_groups": groups})
