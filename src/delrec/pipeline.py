"""`delrec run`: data -> candidates -> teachers -> stage 1 -> stage 2 -> evaluation -> report.

Every stage is cached in the run directory under a hash of its inputs (`steps.py`), so changing only stage-2
settings reuses the teachers and the stage-1 soft prompts.
"""

from __future__ import annotations

import json
import random
import time
from typing import Literal

import torch

from delrec import DelrecError, dist
from delrec.config import RunConfig
from delrec.console import header
from delrec.data.candidates import make_candidates
from delrec.data.registry import load_dataset
from delrec.data.split import make_split
from delrec.io import atomic_write_text
from delrec.lm_rows import new_lm, prompt_builder, zero_shot_row
from delrec.methods import METHODS, run_methods
from delrec.metrics import MetricsFile
from delrec.preflight import check_before_training
from delrec.report import results_table, write_report
from delrec.runs import machine, provenance
from delrec.steps import Context, add_row, prepare, stage1, stage2, train_teachers

__all__ = ["Context", "new_lm", "prepare", "prompt_builder", "run_command", "train_teachers"]

Until = Literal["teach", "distill", "finetune", "evaluate"]


def run_command(cfg: RunConfig, *, resume: bool = False, until: Until = "evaluate") -> dict:
    """The pipeline up to `until` (teach: teachers only; distill: + stage 1; finetune: + stage 2 without the
    zero-shot rows and the rows that read the teacher: hint, residual; evaluate: everything); returns the rows."""
    check_before_training(cfg, until)
    start = time.time()
    ctx = prepare(cfg)
    stamp = provenance(cfg)
    ctx.log.write(stage="run", event="run_start", until=until, resume=resume, **stamp)
    # Fresh rows: results.md says which config produced it, so rows of earlier runs are not carried over.
    metrics = MetricsFile(ctx.run.path("metrics.json"), dataset=ctx.dataset.name, protocol=cfg.data.protocol,
                          candidates=cfg.data.n_candidates, write=dist.is_main(), fresh=True)
    metrics.data["produced_by"] = stamp
    parts: dict[str, float] = {}  # wall seconds of each part of this invocation (a cached part takes ~0)

    def timed(name: str, fn, *args):
        t = time.time()
        out = fn(*args)
        parts[name] = round(parts.get(name, 0.0) + time.time() - t, 1)
        return out

    teachers = timed("teachers", lambda: train_teachers(ctx, metrics))
    teacher = teachers[cfg.teacher.models[0]]
    for name in run_methods(cfg.eval) if until != "teach" else []:  # the LM rows, in the table's order
        m = METHODS[name]
        if not m.stage2:  # the untrained LM
            if until == "evaluate":
                header(f"{name}: the untrained LM on the test candidates")
                add_row(ctx, metrics, name, timed(f"test/{name}", zero_shot_row, cfg, ctx.dataset, ctx.cands["test"], name))
            continue
        if m.reads_teacher and until != "evaluate":
            continue
        soft_path = key = None
        if m.soft_prompt:
            soft_path, key = timed(f"stage1/{m.soft_prompt}", stage1, ctx, teacher, m.soft_prompt, resume)
        if until != "distill":
            add_row(ctx, metrics, name, timed(f"stage2/{name}", stage2, ctx, name, soft_path, key, resume, teachers))
    if cfg.eval.fusion and until == "evaluate":
        from delrec.fusion import fusion_rows

        rows = timed("fusion", lambda: fusion_rows(ctx.run, cfg, teachers, ctx.cands, set(metrics.rows)))
        if dist.is_main():
            atomic_write_text(ctx.run.path("fusion.json"), json.dumps({m: r["fusion"] for m, r in rows.items()},
                                                                       indent=2) + "\n")
        for name in (m for m in METHODS if m in rows):  # the table's order
            add_row(ctx, metrics, name, rows[name])
    elapsed = round(time.time() - start, 1)
    metrics.data["run"] = {"started": stamp["started"], "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "elapsed_s": elapsed, "resumed": resume, "processes": dist.world()[1],
                           "threads_per_process": torch.get_num_threads(), "machine": machine(),
                           "part_seconds": parts}
    metrics.save()
    ctx.log.write(stage="run", event="run_end", until=until, methods=list(metrics.rows), elapsed_s=elapsed,
                  part_seconds=parts)
    if dist.is_main():
        write_report(ctx.run.root, metrics, cfg)
        if until != "teach":
            header(f"results: {ctx.run.root / 'results.md'} (also metrics.json, plots/)")
        print(results_table(metrics.rows, cfg))
        print(stage_times(parts, elapsed))
    return metrics.rows


def stage_times(parts: dict[str, float], elapsed: float) -> str:
    """One line of where this invocation's time went (a cached part shows ~0 s)."""
    def hms(s: float) -> str:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m" if s >= 3600 else f"{int(s // 60)}m{int(s % 60):02d}s"
    return "time: " + ", ".join(f"{k} {hms(v)}" for k, v in parts.items()) + f"; total {hms(elapsed)}"


def teach_command(cfg: RunConfig) -> dict:
    """`delrec teach`: the pipeline up to the teachers, on the same candidate files as `delrec run`."""
    return run_command(cfg, until="teach")


def distill_command(cfg: RunConfig, resume: bool = False) -> dict:
    return run_command(cfg, resume=resume, until="distill")


def finetune_command(cfg: RunConfig, resume: bool = False) -> dict:
    return run_command(cfg, resume=resume, until="finetune")


def show_prompt(cfg: RunConfig, task: str = "lsr", index: int = 0) -> str:
    """A rendered prompt of the configured dataset, the soft-prompt slot marked (`delrec prompt`)."""
    from delrec.prompts.templates import mark_soft

    dataset = load_dataset(cfg.data)
    split = make_split(dataset, cfg.data.protocol, seed=cfg.data.seed, max_train_examples=index + 1)
    ex = split.test[index % len(split.test)]
    cs = make_candidates(dataset, [ex], n_candidates=cfg.data.n_candidates, seed=cfg.data.seed)[0]
    builder = prompt_builder(cfg, dataset)
    # Stage-1 prompts need the teacher's top-k, and no teacher is trained here: some of the example's own
    # candidates stand in for it, and the output says so.
    stand_in = list(cs.candidates[: cfg.teacher.topk])
    rng = random.Random(0)
    example = {"lsr": lambda: builder.lsr(cs), "ta": lambda: builder.ta(ex.history, stand_in[0], rng),
               "rps": lambda: builder.rps(ex.history, stand_in, rng)}[task]()
    if example is None:
        raise DelrecError(f"history of example {index} is too short for task {task}")
    answer = example.candidates[example.label]
    notes = [f"[answer: {answer}]  [{len(example.candidates)} candidates]"]
    teacher = builder.teacher_name
    if task == "ta":
        notes.append(f"[{teacher}'s next-item guess: a stand-in ({dataset.catalog.titles[stand_in[0]]!r}, one of "
                     f"this example's candidates), not a trained {teacher}'s: `delrec prompt` trains no teacher]")
    elif task == "rps":
        notes.append(f"[{teacher}'s top-{len(stand_in)}: stand-ins ({len(stand_in)} of this example's "
                     f"candidates), not a trained {teacher}'s; the answer is the stand-in top-1: "
                     f"`delrec prompt` trains no teacher]")
    return mark_soft(example.prompt) + "\n\n" + "\n".join(notes)
