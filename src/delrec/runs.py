"""The run directory: its layout, stage caching by a hash of each stage's inputs, and reloading a run."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from delrec import __version__, dist
from delrec.config import RunConfig
from delrec.io import atomic_write_text
from delrec.methods import METHODS, TRAINED_METHODS


def digest(*parts) -> str:
    """Short stable hash of JSON-able inputs."""
    blob = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts], sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


class RunDir:
    """`config.yaml`, `candidates/`, `teacher/`, `stage1/`, `stage2/`, `metrics.json`, `results.md`, `plots/`,
    `log.jsonl`. Each stage folder is named by what it is and the hash of its inputs."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def log_path(self) -> Path:
        return self.root / "log.jsonl"

    def data_key(self, cfg: RunConfig) -> str:
        d = asdict(cfg.data)
        d.pop("data_dir")  # where the files live does not change what they hold (the fingerprint checks that)
        return digest(d)

    def teacher_dir(self, cfg: RunConfig, model: str) -> Path:
        return self.path("teacher", model)

    def hint_teacher_dir(self, cfg: RunConfig) -> Path:
        """The teacher that writes delrec+hint's training hints (eval.hint_train_teacher: before-targets)."""
        return self.path("teacher", f"{cfg.teacher.models[0]}-before-targets")

    def hint_teacher_key(self, cfg: RunConfig) -> str:
        """Its key: the run's first teacher's settings, so a teacher trained with other settings is not reused."""
        return digest(self.teacher_key(cfg, cfg.teacher.models[0]), "before-targets")

    def teacher_key(self, cfg: RunConfig, model: str) -> str:
        settings = asdict(cfg.teacher)
        settings.pop("models")  # which other teachers are reported does not change this one
        return digest(self.data_key(cfg), settings, model, cfg.seed)

    def stage1_key(self, cfg: RunConfig, variant: str) -> str:
        return digest(self.teacher_key(cfg, cfg.teacher.models[0]), cfg.lm.settings(), cfg.stage1.settings(), variant)

    def stage1_dir(self, cfg: RunConfig, variant: str) -> Path:
        return self.path("stage1", f"{variant}-{self.stage1_key(cfg, variant)}")

    def stage2_dir(self, cfg: RunConfig, method: str, stage1_key: str | None) -> Path:
        # Whether the row's prompt carries a hint (before: eval.teacher_hint, so turning the hint row on
        # retrained every other row; the value is the same for every run that was valid then).
        hint = METHODS[method].hint
        parts = [self.data_key(cfg), stage1_key, cfg.lm.settings(), cfg.stage2.settings(), hint, method, cfg.seed]
        if hint:  # only there: the other rows keep their folders
            parts += [cfg.eval.hint_train_teacher, cfg.eval.hint_k]
        if METHODS[method].residual:
            parts += [cfg.eval.hint_train_teacher]
        if METHODS[method].user or METHODS[method].hybrid:
            parts += [cfg.eval.projector_teacher, cfg.eval.projector_rank, cfg.eval.projector_at]
        if METHODS[method].hybrid:
            parts += [cfg.eval.hybrid_curriculum]
        key = digest(*parts)
        return self.path("stage2", f"{method}-{key}")


def stage2_folders(run: RunDir, cfg: RunConfig) -> dict[str, Path]:
    """method name -> its finished stage-2 folder for `cfg`, in the order runs report them."""
    out = {}
    for method in TRAINED_METHODS:
        variant = METHODS[method].soft_prompt
        key = run.stage1_key(cfg, variant) if variant else None
        folder = run.stage2_dir(cfg, method, key)
        if (folder / "done.json").exists():
            out[method] = folder
    return out


def is_done(folder: Path, key: str = "") -> dict | None:
    """The stage's result if it finished with these inputs, else None."""
    marker = Path(folder) / "done.json"
    if not marker.exists():
        return None
    result = json.loads(marker.read_text())
    return result if result.get("key", "") == key else None


def mark_done(folder: Path, result: dict, key: str = "") -> None:
    if dist.is_main():
        atomic_write_text(Path(folder) / "done.json", json.dumps(result | {"key": key}, indent=2) + "\n")
    dist.barrier()


def fresh(folder: Path, resume: bool) -> Path:
    """A stage folder to (re)start in: kept when resuming, emptied otherwise."""
    folder = Path(folder)
    if dist.is_main() and folder.exists() and not resume and not (folder / "done.json").exists():
        shutil.rmtree(folder)
    dist.barrier()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def git_commit() -> str | None:
    """The commit of the delrec source that runs, `-dirty` when its checkout has uncommitted changes; None
    when delrec is not run from a git checkout of itself (an installed wheel, a copy)."""
    src = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=10,
                              check=False)
        if done.returncode:
            raise OSError(done.stderr)
        return done.stdout.strip()

    try:
        # A checkout of delrec holds src/delrec; a site-packages inside some other repository does not.
        if (Path(git("rev-parse", "--show-toplevel")) / "src" / "delrec").resolve() != src:
            return None
        commit = git("rev-parse", "--short=12", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, a timeout
        return None


def machine() -> dict:
    """The machine a number was measured on: CPU model, cores, torch threads and version, bf16 matrix units."""
    import os
    import platform

    import torch

    cpu, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine(), platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line
    except OSError:  # not Linux
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "amx_bf16": "amx_bf16" in flags.split(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available()
            else None}


def provenance(cfg: RunConfig) -> dict:
    """What produced a run's results: delrec's version and commit, and the resolved config (its digest; the
    run folder's config.yaml holds it, and `delrec run --config <run>/config.yaml` runs it again)."""
    return {"delrec_version": __version__, "git_commit": git_commit(), "config": "config.yaml",
            "config_digest": digest(cfg), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
