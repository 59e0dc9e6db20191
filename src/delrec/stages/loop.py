"""One training loop for both stages: accumulation, clipping, schedule, validation, early stopping,
atomic checkpoints and exact resume. Runs alone, under `torchrun` or under `accelerate launch`.

The caller's `step_fn(step)` computes the gradients of one optimiser step (all micro-batches); the loop
averages them across processes (unless the step says it already did), clips, steps and evaluates.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from delrec import DelrecError, dist
from delrec.config import StageConfig, section_settings
from delrec.io import atomic_write_text
from delrec.stages.checkpoint import (
    load_checkpoint,
    load_optimizer_tensors,
    optimizer_tensors,
    save_checkpoint,
)
from delrec.stages.determinism import deterministic_on_cpu
from delrec.stages.optim import lr_at, make_optimizer

# What a stage's validation value is when its evaluate() does not say (evaluate.MetricValue.name): stage 1
# averages the TA and RPS accuracies (each is logged in its "eval_tasks" record).
VALID_METRIC = {"stage1": "accuracy (TA/RPS mean)", "stage2": "ndcg@5"}


class JsonlLog:
    """log.jsonl: one JSON record per line. Training steps carry `stage` and `step`; other records say what
    they are in `event` (run_start, run_end, start, resumed, eval, eval_tasks, epoch, test, ...). Every record
    carries `time` (Unix seconds, when it was written), so the time between records tells what each part of a
    run cost (benchmarks/tools/stage_times.py)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, **record) -> None:
        if dist.is_main():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(record | {"time": round(time.time(), 2)}) + "\n")

    def forget_after(self, stage: str, folder: str, step: int) -> None:
        """Drop the records of `stage` trained in `folder` past `step`: the steps a resumed (or restarted)
        run redoes, so the log and the training plot hold one history.

        A record belongs to the folder named by the latest "start" record of its stage before it; records of
        the same stage name from other folders (other settings) and logs from before start records are kept.
        """
        if not dist.is_main() or not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        owner: dict[str, str | None] = {}
        kept = []
        for line in lines:
            rec = json.loads(line)
            name = rec.get("stage")
            if rec.get("event") == "start":
                owner[name] = rec.get("folder")
            elif name == stage and owner.get(name) == folder and rec.get("step", 0) > step:
                continue
            kept.append(line)
        if len(kept) != len(lines):
            atomic_write_text(self.path, "".join(ln + "\n" for ln in kept))


@dataclass
class LoopState:
    step: int = 0
    best_metric: float = -math.inf
    best_step: int = -1
    bad_evals: int = 0
    evals: list = field(default_factory=list)


@dataclass
class Trainer:
    cfg: StageConfig
    params: dict[str, torch.nn.Parameter]
    run_dir: Path
    name: str
    log: JsonlLog
    extra_state: Callable[[], dict[str, torch.Tensor]] | None = None
    load_extra_state: Callable[[dict[str, torch.Tensor]], None] | None = None

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        self.ckpt_path = self.run_dir / "checkpoint.safetensors"
        self.optimizer = make_optimizer(self.cfg, self.params.values())
        self.state = LoopState()
        self.best = {k: p.detach().clone() for k, p in self.params.items()}

    # -- checkpoints -------------------------------------------------------------------------------------
    def save(self) -> None:
        if not dist.is_main():
            return
        tensors = {f"param.{k}": p for k, p in self.params.items()}
        tensors |= {f"best.{k}": v for k, v in self.best.items()}
        opt_t, groups = optimizer_tensors(self.optimizer)
        tensors |= opt_t
        tensors["rng.torch"] = torch.get_rng_state()
        if self.extra_state:
            tensors |= {f"extra.{k}": v for k, v in self.extra_state().items()}
        # The stage's resolved config rides along (as nanoGPT's model_args): a checkpoint says what made it.
        meta = {"state": self.state.__dict__, "groups": groups, "stage": self.name, "steps": self.cfg.steps,
                "section": self.cfg.section, "config": dataclasses.asdict(self.cfg)}
        save_checkpoint(self.ckpt_path, tensors, meta)

    def restore(self) -> bool:
        if not self.ckpt_path.exists():
            return False
        tensors, meta = load_checkpoint(self.ckpt_path)
        self._check_config(meta.get("config"))
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(tensors[f"param.{k}"])
                self.best[k] = tensors[f"best.{k}"].clone()
        load_optimizer_tensors(self.optimizer, tensors, meta["groups"])
        torch.set_rng_state(tensors["rng.torch"])
        if self.load_extra_state:
            self.load_extra_state({k[6:]: v for k, v in tensors.items() if k.startswith("extra.")})
        self.state = LoopState(**meta["state"])
        return True

    def _check_config(self, saved: dict | None) -> None:
        """Resuming under other settings would silently mix two runs; checkpoints from before configs were
        stored (no "config") are trusted as before."""
        if saved is None:
            return
        current = self.cfg.settings()
        saved = section_settings(self.cfg.section, saved)
        changed = sorted(k for k in current.keys() | saved.keys() if current.get(k) != saved.get(k))
        if changed:
            k, section = changed[0], self.cfg.section
            raise DelrecError(f"{self.ckpt_path}: written with {section}.{k}={saved.get(k)!r}, this run has "
                              f"{current.get(k)!r} ({len(changed)} setting(s) differ); resume with the same "
                              f"{section} settings or start without --resume")

    @property
    def finished(self) -> bool:
        """The step budget is spent or early stopping fired (not: interrupted by `stop_after`)."""
        return self.state.step >= self.cfg.steps or self.state.bad_evals >= self.cfg.patience

    def result(self) -> dict:
        """What a stage reports (and `done.json` keeps): finished, best validation metric and its step, steps
        run, every evaluation."""
        st = self.state
        stop = "patience" if st.bad_evals >= self.cfg.patience else "steps" if st.step >= self.cfg.steps else None
        return {"finished": self.finished, "stop_reason": stop, "best_valid": st.best_metric,
                "best_step": st.best_step, "steps": st.step, "evals": st.evals}

    def save_best(self, path: Path, save_fn: Callable[[Path], None]) -> None:
        """Write the selected weights with the caller's format (soft prompt file, peft adapter folder)."""
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(self.best[k])
        if dist.is_main():
            save_fn(Path(path))
        dist.barrier()

    # -- the loop -----------------------------------------------------------------------------------------
    def fit(self, step_fn: Callable[[int], dict], evaluate: Callable[[], float],
            post_step: Callable[[int], None] | None = None, *, seed: int, resume: bool = False,
            stop_after: int | None = None) -> LoopState:
        device = next(iter(self.params.values())).device
        with deterministic_on_cpu(device):
            return self._fit(step_fn, evaluate, post_step, seed=seed, resume=resume, stop_after=stop_after)

    def _fit(self, step_fn, evaluate, post_step, *, seed: int, resume: bool, stop_after: int | None) -> LoopState:
        cfg, st = self.cfg, self.state
        folder = self.run_dir.name
        # Dropout draws depend only on the seed, not on what ran before in this process (a cached teacher,
        # say); a resumed run then restores the RNG state of its checkpoint.
        torch.manual_seed(seed)
        if resume and self.restore():
            st = self.state
            self.log.forget_after(self.name, folder, st.step)
            self.log.write(stage=self.name, event="resumed", step=st.step)
        else:  # a fresh start: steps an abandoned attempt of this folder logged are redone
            self.log.forget_after(self.name, folder, 0)
            self.log.write(stage=self.name, event="start", step=0, folder=folder)
        bar = tqdm(total=cfg.steps, initial=st.step, desc=self.name, disable=not dist.is_main(), dynamic_ncols=True)
        t0 = last_save = time.time()
        done_this_run = 0
        while st.step < cfg.steps and st.bad_evals < cfg.patience:
            if stop_after is not None and done_this_run >= stop_after:
                break  # simulated interruption (tests); the last checkpoint is what a killed run leaves
            lr = lr_at(cfg, st.step)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            logs = step_fn(st.step)
            grads = [p.grad for p in self.params.values()]
            if not logs.pop("grads_reduced", False):
                dist.all_reduce_mean_(grads)
            norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), cfg.max_grad_norm)
            self.optimizer.step()
            if post_step:
                post_step(st.step)
            self.optimizer.zero_grad(set_to_none=True)
            st.step += 1
            done_this_run += 1
            logs = {k: (float(v) if torch.is_tensor(v) else v) for k, v in logs.items()}
            self.log.write(stage=self.name, step=st.step, lr=lr, grad_norm=float(norm),
                           elapsed_s=round(time.time() - t0, 3), **logs)
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items() if isinstance(v, float)}, refresh=False)
            if st.step % cfg.eval_every == 0 or st.step == cfg.steps:
                self._evaluate(evaluate, time.time() - t0)
                self.save()
                last_save = time.time()
            elif time.time() - last_save >= 60 * cfg.checkpoint_minutes:
                # A slow step (minutes on a CPU) should not cost a whole validation interval when killed.
                self.save()
                last_save = time.time()
        bar.close()
        return st

    def _evaluate(self, evaluate: Callable[[], float], elapsed: float) -> None:
        st = self.state
        value = evaluate()
        # `valid` is kept as it was (scripts read it); `metric` says what it measures
        name = getattr(value, "name", None) or VALID_METRIC.get(self.cfg.section, "validation metric")
        metric = float(value)
        st.evals.append([st.step, metric])
        if metric > st.best_metric:
            st.best_metric, st.best_step, st.bad_evals = metric, st.step, 0
            self.best = {k: p.detach().clone() for k, p in self.params.items()}
        else:
            st.bad_evals += 1
        self.log.write(stage=self.name, step=st.step, event="eval", valid=metric, metric=name,
                       best=st.best_metric, elapsed_s=round(elapsed, 1))

