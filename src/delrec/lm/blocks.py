"""A decoder-only model's list of transformer blocks, and two forward pre-hooks that split its forward at one
of them: run the blocks below it only (`lower_states`), or the blocks from it on only (`upper_only`). Used by
the lower-layer cache (lm/layer_cache.py) and by the packed pass that runs the top blocks (lm/packed.py)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from delrec import DelrecError


def decoder_blocks(model) -> tuple[nn.Module, str]:
    """(module holding the blocks, attribute name) of a decoder-only model, peft-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    n = getattr(base.config, "num_hidden_layers", None)
    for module in base.modules():
        for attr in ("layers", "h"):
            blocks = getattr(module, attr, None)
            if isinstance(blocks, nn.ModuleList) and len(blocks) == n:
                return module, attr
    raise DelrecError(f"stage2.cache_lower: no list of {n} transformer blocks found in {type(base).__name__}; "
                      f"set stage2.cache_lower=false")


def n_blocks(model) -> int:
    owner, attr = decoder_blocks(model)
    return len(getattr(owner, attr))


class _Stop(Exception):
    def __init__(self, states):
        super().__init__()
        self.states = states


def lower_states(model, first_upper: int, **forward_kwargs) -> torch.Tensor:
    """Hidden states entering block `first_upper` for `model(**forward_kwargs)`; the blocks above never run."""
    owner, attr = decoder_blocks(model)

    def stop(module, args, kwargs):
        raise _Stop(args[0] if args else kwargs["hidden_states"])

    handle = getattr(owner, attr)[first_upper].register_forward_pre_hook(stop, with_kwargs=True)
    try:
        model(**forward_kwargs)
    except _Stop as s:
        return s.states
    finally:
        handle.remove()
    raise DelrecError("stage2.cache_lower: the model's forward never reached its transformer blocks")


@contextmanager
def upper_only(model, first_upper: int, states: torch.Tensor):
    """Within the block, `model(...)` runs blocks `first_upper..` only, starting from `states` [B, S, D]."""
    owner, attr = decoder_blocks(model)
    blocks = getattr(owner, attr)

    def feed(module, args, kwargs):
        if args:
            return (states.to(args[0].dtype),) + tuple(args[1:]), kwargs
        return args, kwargs | {"hidden_states": states.to(kwargs["hidden_states"].dtype)}

    handle = blocks[first_upper].register_forward_pre_hook(feed, with_kwargs=True)
    setattr(owner, attr, nn.ModuleList(list(blocks)[first_upper:]))
    try:
        yield
    finally:
        handle.remove()
        setattr(owner, attr, blocks)
