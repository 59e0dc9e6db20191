"""Load the frozen language model DELRec prompts: a hub id, a local folder, an offline GGUF model (`gguf.py`),
or a tiny randomly initialised model for tests and demos (`tiny.py`).

Everything downstream talks to `Backbone.model` only through generic Hugging Face calls
(`get_input_embeddings()`, `model(inputs_embeds=..., ...)`, `get_encoder()`), because stage 2 swaps the model
for a peft AdaLoRA wrapper and the scorer must keep working unchanged.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from delrec import DelrecError
from delrec.choices import DTYPES
from delrec.config import LMConfig
from delrec.device import resolve_device
from delrec.lm.gguf import OFFLINE, SMOLLM2_NAME, check_offline, offline_folder
from delrec.lm.tiny import TINY_KINDS, tiny_model

# The T5 family's attention is q/k/v/o; GPT-2 fuses q, k and v into one Conv1D.
_T5_TYPES = {"t5", "mt5", "umt5", "longt5"}
_TARGETS = {"gpt2": ["c_attn"], **{t: ["q", "v"] for t in _T5_TYPES}}


@dataclass
class Backbone:
    model: Any
    tokenizer: Any
    is_encoder_decoder: bool
    name: str

    def input_embeddings(self) -> torch.nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def embed_dim(self) -> int:
        return int(self.input_embeddings().weight.shape[1])

    @property
    def device(self) -> torch.device:
        return self.input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.input_embeddings().weight.dtype


def forward_params(model) -> set[str]:
    """Names the (base) model's forward accepts: which keyword a transformers version uses for the cache, and
    whether `logits_to_keep` exists, differ between versions and architectures."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(type(base).forward).parameters)


def load_backbone(cfg: LMConfig) -> Backbone:
    """Load `cfg.backbone`, frozen and in eval mode, in `cfg.dtype` on `cfg.device`."""
    if cfg.dtype not in DTYPES:
        raise DelrecError(f"lm.dtype: {cfg.dtype!r} is not one of {', '.join(DTYPES)}")
    dtype, device, name = getattr(torch, DTYPES[cfg.dtype]), resolve_device(cfg.device), cfg.backbone
    kind, source = resolve_backbone(cfg)
    if kind == "tiny":
        return tiny_backbone(source, dtype=dtype, device=device)
    if kind == "offline":
        return _finish(*_load_pretrained(str(offline_folder(cfg.cache_dir, OFFLINE[name])), dtype), name, dtype,
                       device)
    if kind == "folder":
        return _finish(*_load_pretrained(source, dtype), name, dtype, device)
    try:
        return _finish(*_load_pretrained(name, dtype), name, dtype, device)
    except DelrecError:
        raise
    except Exception as exc:  # noqa: BLE001 - hub failures come as many exception types; all mean the same
        raise _hub_error(name, exc) from None


def resolve_backbone(cfg: LMConfig) -> tuple[str, str]:
    """What `lm.backbone` names, checked without reading any weights: ("tiny", kind), ("offline", name),
    ("folder", path) or ("hub", id). A name that cannot load is a one-line error here."""
    name = cfg.backbone
    if name.startswith("tiny-random-"):
        kind = name.removeprefix("tiny-random-")
        if kind not in TINY_KINDS:
            raise DelrecError(f"lm.backbone: tiny-random-{kind} is unknown; use one of "
                              f"{', '.join('tiny-random-' + k for k in TINY_KINDS)}")
        return "tiny", kind
    if name in OFFLINE:
        check_offline(cfg.cache_dir, OFFLINE[name])
        return "offline", name
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise DelrecError(f"lm.backbone: {path} has no config.json; point it at a saved Hugging Face model folder")
        return "folder", str(path)
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name:
        raise DelrecError(f"lm.backbone: local model folder {name} does not exist; save the model there "
                          f"(save_pretrained) or use lm.backbone={SMOLLM2_NAME}")
    return "hub", name


def check_backbone(cfg: LMConfig) -> None:
    """Fail before any training if `lm.backbone` cannot load: the name resolves, and a model's config (a
    few KB: from its folder, the Hugging Face cache or the hub) allows `lm.dtype`. No weights are read."""
    kind, source = resolve_backbone(cfg)
    if kind in ("folder", "hub"):
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(source)
        except Exception as exc:  # noqa: BLE001 - as in load_backbone
            if kind == "folder":
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                raise DelrecError(f"lm.backbone: {source}/config.json cannot be read ({reason})") from None
            raise _hub_error(source, exc) from None
        dtype = getattr(torch, DTYPES[cfg.dtype])
        _check_dtype(config.model_type, bool(getattr(config, "is_encoder_decoder", False)), dtype)
    elif kind == "tiny" and cfg.dtype == "fp16" and source == "t5":
        _check_dtype("t5", True, torch.float16)


def _hub_error(name: str, exc: Exception) -> DelrecError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return DelrecError(
        f"lm.backbone: cannot load {name!r} from the Hugging Face hub ({reason}); without network put the "
        f"model in a local folder and pass its path, pre-fill the HF cache and set HF_HUB_OFFLINE=1, "
        f"or use lm.backbone={SMOLLM2_NAME}")


def _load_pretrained(source: str, dtype: torch.dtype):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    config = AutoConfig.from_pretrained(source)
    enc_dec = bool(getattr(config, "is_encoder_decoder", False))
    _check_dtype(config.model_type, enc_dec, dtype)  # before reading gigabytes of weights
    cls = AutoModelForSeq2SeqLM if enc_dec else AutoModelForCausalLM
    return cls.from_pretrained(source, dtype=dtype), AutoTokenizer.from_pretrained(source), enc_dec


def _check_dtype(model_type: str, enc_dec: bool, dtype: torch.dtype) -> None:
    if dtype == torch.float16 and (enc_dec or model_type in _T5_TYPES):
        raise DelrecError(f"lm.dtype: fp16 is refused for {model_type} (T5 activations overflow fp16 and give "
                          f"NaN); use lm.dtype=bf16 or fp32")


def from_model(model, tokenizer, name: str = "custom", dtype: torch.dtype | None = None,
               device: str | torch.device | None = None) -> Backbone:
    """Wrap a model built elsewhere (frozen, eval mode), e.g. a random model of a real model's shape."""
    enc_dec = bool(getattr(model.config, "is_encoder_decoder", False))
    dtype = dtype or next(model.parameters()).dtype
    device = torch.device(device) if device is not None else next(model.parameters()).device
    return _finish(model, tokenizer, enc_dec, name, dtype, device)


def _finish(model, tokenizer, enc_dec: bool, name: str, dtype: torch.dtype, device: torch.device) -> Backbone:
    _check_dtype(model.config.model_type, enc_dec, dtype)
    model.to(device=device, dtype=dtype)
    model.eval()
    model.requires_grad_(False)  # DELRec never trains the base weights; stage 2 adds adapters on top
    return Backbone(model=model, tokenizer=tokenizer, is_encoder_decoder=enc_dec, name=name)


def tiny_backbone(kind: str, seed: int = 0, vocab_texts=(), *, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu") -> Backbone:
    """A tiny randomly initialised `kind` model (t5 | llama | gpt2) with a local tokenizer; deterministic."""
    if kind not in TINY_KINDS:
        raise DelrecError(f"lm.backbone: tiny-random-{kind} is unknown; use one of "
                          f"{', '.join('tiny-random-' + k for k in TINY_KINDS)}")
    model, tokenizer = tiny_model(kind, seed, vocab_texts)
    return _finish(model, tokenizer, kind == "t5", f"tiny-random-{kind}", dtype, torch.device(device))


def attention_target_modules(model) -> list[str]:
    """Names of the attention query/value projections that AdaLoRA adapts, per architecture."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model_type = getattr(base.config, "model_type", type(base).__name__)
    if model_type in _TARGETS:
        return list(_TARGETS[model_type])
    # Llama, Mistral, Qwen, Gemma, SmolLM and most recent decoders name them q_proj / v_proj.
    leaves = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
    if {"q_proj", "v_proj"} <= leaves:
        return ["q_proj", "v_proj"]
    raise DelrecError(f"attention_target_modules: unknown architecture {model_type!r} (no q/v or q_proj/v_proj "
                      f"or c_attn modules); add its query/value module names to delrec.lm.backbone._TARGETS")
