"""Lower-layer states kept on disk (`stage2.lower_states_dir`), so a resumed run or another stage-2 budget
with the same backbone and soft prompt skips the lower pass over every training example.

On ML-100K with SmolLM2 that pass is the first epoch's cost: about 30 of a 20,000-pass run's ~90 minutes
on one CPU thread (benchmarks/BENCHMARKS.md). The states are a fixed function of the frozen weights, the
frozen soft prompt, the split point, the dtype and the packed text, so one file is named by a digest of all
of those but the text; entries inside it are looked up by prompt and title text, as in memory.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from delrec import DelrecError
from delrec.io import atomic_path


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()


def states_digest(scorer, first_upper: int, soft_prompt, dtype: torch.dtype) -> str:
    """What the stored states depend on: every frozen base weight, the soft prompt, the tokenizer, the split
    point, the stored dtype and whether the pass ran under bf16 autocast."""
    h = hashlib.sha256()
    h.update(json.dumps([first_upper, str(dtype), bool(scorer.autocast_bf16), scorer.tok.name_or_path,
                         len(scorer.tok)]).encode())
    for name, p in scorer.backbone.model.named_parameters():
        if not p.requires_grad and "lora_" not in name:
            h.update(name.encode())
            h.update(_tensor_bytes(p))
    if soft_prompt is not None:
        h.update(_tensor_bytes(soft_prompt.weight))
    return h.hexdigest()[:16]


def store_path(folder: str | Path, digest: str, tag: str = "stage2") -> Path:
    """One file per stage-2 method (`tag`) and digest: delrec and delrec+hint share a soft prompt, hence a
    digest, but not their prompts, so one file for both would make each load the other's states."""
    return Path(folder).expanduser() / f"lower-{re.sub(r'[^A-Za-z0-9_.+-]', '_', tag)}-{digest}.safetensors"


def save_states(cache, path: Path, digest: str) -> None:
    """Write every entry of a LowerStateCache (atomic: an interrupted write leaves the old file)."""
    tensors, index = {}, []
    for i, (prompt, (p_states, titles)) in enumerate(cache.rows.items()):
        tensors[f"p.{i}"] = p_states.contiguous()
        names = list(titles)
        for j, t in enumerate(names):
            tensors[f"t.{i}.{j}"] = titles[t].contiguous()
        index.append([prompt, names])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"digest": digest, "index": json.dumps(index)})


def load_states(cache, path: Path, digest: str) -> int:
    """Add the file's entries to `cache`; returns how many prompts it held. A file of other states is an
    error naming it (its name carries the digest, so this means it was renamed or damaged)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("digest") != digest:
                raise DelrecError(f"{path}: holds lower-layer states of another backbone or soft prompt "
                                  f"(digest {meta.get('digest')!r}, expected {digest!r}); delete it")
            index = json.loads(meta["index"])
            for i, (prompt, names) in enumerate(index):
                titles = {t: f.get_tensor(f"t.{i}.{j}") for j, t in enumerate(names)}
                cache.add(prompt, f.get_tensor(f"p.{i}"), titles, owned=True)
    except DelrecError:
        raise
    except Exception as e:  # safetensors' own error type, OSError, a damaged index
        raise DelrecError(f"{path}: not a readable lower-state file ({e}); delete it") from e
    return len(index)


class LowerStateFile:
    """The on-disk copy of an UpperLayerScorer's cache for one stage-2 run: loaded at the start when present,
    written once every training prompt is held (the first epoch's end) and at the end if it grew since.
    With no folder it does nothing."""

    def __init__(self, fast, soft_prompt, folder: str, log=None, stage: str = "stage2", tag: str | None = None):
        self.cache, self.path, self.written, self.complete = fast.cache, None, 0, False
        if not folder:
            return
        from delrec import dist

        digest = states_digest(fast.scorer, fast.first_upper, soft_prompt, fast.cache.dtype)
        tag = tag or stage.rsplit("/", 1)[-1]  # the row whose prompts these are (store_path)
        self.path, self.digest, self.main = store_path(folder, digest, tag), digest, dist.is_main()
        if self.path.exists():
            self.written = load_states(self.cache, self.path, digest)
            if log is not None:
                log.write(stage=stage, event="lower_states", loaded=self.written, path=str(self.path))

    def save_when_holding(self, prompts: set) -> None:
        """Write once, on the first call at which every one of `prompts` is in the cache."""
        if self.path is None or self.complete or not all(p in self.cache.rows for p in prompts):
            return
        self.complete = True
        self.save_if_grown()

    def save_if_grown(self) -> None:
        n = len(self.cache.rows)
        if self.path is None or n <= self.written:
            return
        if self.main:  # one process writes; the others hold the same states
            save_states(self.cache, self.path, self.digest)
        self.written = n
