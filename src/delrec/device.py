"""Which torch device a `*.device` setting names: `auto` (CUDA when present, else CPU) or an explicit one."""

from __future__ import annotations

import torch

from delrec import DelrecError


def resolve_device(device: str = "auto", key: str = "lm.device") -> torch.device:
    """`key` is the setting the value came from, so a bad value is reported under its own name."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DelrecError(f"{key}: {device!r} is not a torch device (use auto, cpu, cuda, cuda:0)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DelrecError(f"{key}: {device!r} requested but CUDA is not available here; use auto or cpu")
    return dev
