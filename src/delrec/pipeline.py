"""`delrec run`: data -> candidates -> teachers -> stage 1 -> stage 2 -> evaluation -> report.

Every stage is cached in the run directory under a hash of its inputs, so changing only stage-2 settings
reuses the teachers and the stage-1 soft prompts.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from delrec import DelrecError, dist
from delrec.choices import SOFT_PROMPT_METHODS
from delrec.config import RunConfig
from delrec.console import header
from delrec.data.candidates import CandidateSet, make_candidates, read_candidates, write_candidates
from delrec.data.registry import load_dataset
from delrec.data.sequences import Dataset
from delrec.data.split import Split, make_split
from delrec.evaluate import score_examples
from delrec.io import atomic_write_text
from delrec.methods import build_split, lm_test_row, lsr_examples, new_lm, prompt_builder
from delrec.metrics import MetricsFile
from delrec.preflight import check_before_training
from delrec.prompts.examples import build_stage1
from delrec.report import results_table, write_report
from delrec.runs import RunDir, digest, fresh, is_done, machine, mark_done, provenance
from delrec.stages.loop import JsonlLog

Until = Literal["teach", "distill", "finetune", "evaluate"]
TEST_FIELDS = ("hr@1", "hr@5", "ndcg@5", "n", "ci95")


@dataclass
class Context:
    cfg: RunConfig
    run: RunDir
    dataset: Dataset
    split: Split
    cands: dict[str, list[CandidateSet]]
    log: JsonlLog

    @property
    def test_file(self) -> str:
        return f"candidates/test-{self.run.data_key(self.cfg)}.jsonl"


def prepare(cfg: RunConfig) -> Context:
    run = RunDir(cfg.out)
    run.root.mkdir(parents=True, exist_ok=True)
    if cfg.data.data_dir:  # recommend/evaluate read config.yaml from other folders: no cwd-relative path
        cfg.data.data_dir = str(Path(cfg.data.data_dir).expanduser().resolve())
    if dist.is_main():
        cfg.save(run.path("config.yaml"))
    dataset = load_dataset(cfg.data)
    split = build_split(cfg, dataset)
    cands = {name: candidate_file(cfg, run, dataset, split, name) for name in ("train", "valid", "test")}
    return Context(cfg, run, dataset, split, cands, JsonlLog(run.log_path))


def candidate_file(cfg: RunConfig, run: RunDir, dataset, split: Split, name: str) -> list[CandidateSet]:
    """Written once per split and data config; every model is scored on the same file."""
    path = run.path("candidates", f"{name}-{run.data_key(cfg)}.jsonl")
    if not path.exists() and dist.is_main():
        seed = cfg.data.seed + {"train": 0, "valid": 1, "test": 2}[name]
        sets = make_candidates(dataset, getattr(split, name), n_candidates=cfg.data.n_candidates, seed=seed)
        write_candidates(path, dataset, sets, seed=seed, protocol=cfg.data.protocol, split=name)
    dist.barrier()
    return read_candidates(path, dataset)


def train_teachers(ctx: Context, metrics: MetricsFile) -> dict:
    from delrec.teachers.evaluation import evaluate_teacher
    from delrec.teachers.teacher import Teacher
    from delrec.teachers.topk import export_topk
    from delrec.teachers.train import train_teacher

    cfg, teachers = ctx.cfg, {}
    popularity = train_teacher("popularity", cfg.teacher, ctx.dataset, ctx.split, seed=cfg.seed, progress=False)
    add_row(ctx, metrics, "popularity", evaluate_teacher(popularity, None, ctx.cands["test"], n_boot=cfg.eval.bootstrap))
    for model in cfg.teacher.models:
        folder, key = ctx.run.teacher_dir(cfg, model), ctx.run.teacher_key(cfg, model)
        cached = bool(is_done(folder, key))
        header(f"teacher {model}: " + ("cached" if cached else f"{cfg.teacher.epochs} epochs at most"))
        if not cached:
            out_dir = fresh(folder, False)
            if dist.is_main():  # the other processes wait in mark_done's barrier, then load it
                with dist.main_takes_all_threads():
                    train_teacher(model, cfg.teacher, ctx.dataset, ctx.split, seed=cfg.seed, out_dir=out_dir)
            mark_done(folder, {"model": model}, key)
        teacher = Teacher.load(folder)
        teachers[model] = teacher
        log_teacher(ctx.log, model, key, teacher.info, cached)
        row = evaluate_teacher(teacher, None, ctx.cands["test"], n_boot=cfg.eval.bootstrap)
        add_row(ctx, metrics, model, row | {"seconds": teacher.info.get("seconds")} if teacher.info else row)
        if dist.is_main() and not (folder / "topk.json").exists():
            export_topk(teacher, ctx.dataset, ctx.split, folder / "topk.json", cfg.teacher.topk)
            own = MetricsFile(folder / "metrics.json", dataset=ctx.dataset.name, protocol=cfg.data.protocol,
                              candidates=cfg.data.n_candidates)
            own.add("popularity", metrics.rows["popularity"])
            own.add(model, metrics.rows[model])
    return teachers


def log_teacher(log: JsonlLog, model: str, key: str, info: dict, cached: bool) -> None:
    """A teacher trained now logs its epochs (loss, validation full-catalogue NDCG@10); a cached one says so."""
    stage = f"teacher/{model}"
    if cached:
        log.write(stage=stage, event="cached", key=key)
        return
    log.write(stage=stage, event="start", step=0, folder=model, key=key)
    for e in info.get("log", []):
        log.write(stage=stage, event="epoch", epoch=e["epoch"], loss=e["loss"], valid=e["valid_ndcg@10"],
                  metric="full ndcg@10", elapsed_s=e["seconds"])
    log.write(stage=stage, event="done", best_epoch=info.get("best_epoch"), epochs_run=info.get("epochs_run"),
              seconds=info.get("seconds"))


def add_row(ctx: Context, metrics: MetricsFile, method: str, row: dict) -> None:
    """A test row into metrics.json and log.jsonl (event "test"), so the log holds the results too."""
    metrics.add(method, row)
    ctx.log.write(stage=method, event="test", candidates=ctx.test_file,
                  **{k: v for k, v in row.items() if k in TEST_FIELDS or k.startswith("full/")})


def require_finished(result: dict, what: str) -> dict:
    """Stages return unfinished only when stopped early on purpose (`stop_after`); the folder then holds a
    checkpoint to resume from."""
    if not result["finished"]:
        raise DelrecError(f"{what} stopped before finishing; rerun with --resume")
    return result


def stage1(ctx: Context, teacher, variant: str, resume: bool):
    """The soft prompt of `variant` (cached); returns (soft prompt path, stage-1 key)."""
    from delrec.lm.soft_prompt import SoftPrompt
    from delrec.stages.distill import Stage1Data, distill

    cfg = ctx.cfg
    folder, key = ctx.run.stage1_dir(cfg, variant), ctx.run.stage1_key(cfg, variant)
    if is_done(folder, key):
        header(f"stage 1 ({variant}): cached in {folder.name}")
        return folder / "soft_prompt.safetensors", key
    tasks = "+".join(SOFT_PROMPT_METHODS[variant]).upper()
    header(f"stage 1 ({variant}): soft prompt, {cfg.stage1.steps} steps on {tasks}, LM frozen")
    folder = fresh(folder, resume)
    builder = prompt_builder(cfg, ctx.dataset)
    k = cfg.teacher.topk
    train_h = [e.history for e in ctx.split.train]
    valid_h = [e.history for e in ctx.split.valid[:cfg.stage1.max_eval_examples]]
    ta_tr, rps_tr = build_stage1(builder, train_h, teacher.topk(train_h, k), seed=cfg.seed)
    ta_va, rps_va = build_stage1(builder, valid_h, teacher.topk(valid_h, k), seed=cfg.seed + 1)
    scorer = new_lm(cfg)
    soft = SoftPrompt.create(cfg.lm.n_soft, scorer.backbone, init=cfg.lm.soft_init, seed=cfg.seed)
    result = distill(scorer, soft, Stage1Data(ta_tr, rps_tr, ta_va, rps_va), cfg.stage1, folder, seed=cfg.seed,
                     tasks=SOFT_PROMPT_METHODS[variant], resume=resume, log=ctx.log,
                     eval_batch_size=cfg.eval.batch_size, name=f"stage1/{variant}")
    mark_done(folder, require_finished(result, f"stage 1 ({variant})"), key)
    return folder / "soft_prompt.safetensors", key


def stage2(ctx: Context, method: str, soft_path: Path | None, stage1_key: str | None, resume: bool,
           teachers=None) -> dict:
    from delrec.lm.soft_prompt import SoftPrompt
    from delrec.stages.finetune import add_adalora, finetune

    cfg = ctx.cfg
    folder = ctx.run.stage2_dir(cfg, method, stage1_key)
    key = digest(folder.name)
    done = is_done(folder, key)
    if done:
        header(f"stage 2 ({method}): cached in {folder.name}")
        if cfg.eval.fusion and not (folder / "valid_scores.npy").exists():  # fusion turned on after training
            score_validation(ctx, method, folder, soft_path, teachers)
        return done["test"]
    header(f"stage 2 ({method}): AdaLoRA, {cfg.stage2.steps} steps"
           + (", soft prompt frozen" if soft_path else "") + ", then the test candidates")
    folder = fresh(folder, resume)
    use_soft = soft_path is not None
    hint = teachers[cfg.teacher.models[0]] if method.endswith("+hint") else None
    builder = prompt_builder(cfg, ctx.dataset)
    train = lsr_examples(cfg, builder, ctx.cands["train"], use_soft, hint)
    valid = lsr_examples(cfg, builder, ctx.cands["valid"], use_soft, hint)
    scorer = new_lm(cfg)
    soft = SoftPrompt.load(soft_path).to(scorer.backbone.device) if use_soft else None
    add_adalora(scorer.backbone, cfg.stage2, seed=cfg.seed)
    start = time.time()
    s2 = cfg.stage2
    if s2.lower_states_dir and not Path(s2.lower_states_dir).expanduser().is_absolute():  # inside the run folder
        s2 = dataclasses.replace(s2, lower_states_dir=str(ctx.run.root / s2.lower_states_dir))
    result = finetune(scorer, soft, train, valid, s2, folder, seed=cfg.seed, resume=resume, log=ctx.log,
                      eval_batch_size=cfg.eval.batch_size, name=f"stage2/{method}")
    require_finished(result, f"stage 2 ({method})")
    train_s = round(time.time() - start, 1)  # this process only: a resumed run counts from its restart
    test_start = time.time()
    row = lm_test_row(cfg, builder, scorer, soft, ctx.cands["test"], method, hint)
    if cfg.eval.fusion:  # fusion picks its weight on these, never on the test file
        save_scores(folder, score_examples(scorer, valid, soft, batch_size=cfg.eval.batch_size,
                                           desc=f"valid {method}"), "valid_scores.npy")
    row |= {"test_s": round(time.time() - test_start, 1), "examples_seen": result["steps"] * cfg.stage2.batch_size * cfg.stage2.grad_accum,
            "best_step": result["best_step"], "train_s": train_s, "valid_curve": result["evals"]}
    save_scores(folder, row.pop("scores"))
    # Relative to the run folder, so a moved or copied run still finds its soft prompt.
    soft_rel = soft_path.relative_to(ctx.run.root).as_posix() if soft_path else None
    mark_done(folder, result | {"test": row, "soft_prompt": soft_rel}, key)
    return row


def score_validation(ctx: Context, method: str, folder: Path, soft_path: Path | None, teachers=None) -> None:
    """valid_scores.npy of a finished stage 2: its trained adapter on the validation candidate file."""
    from delrec.lm.soft_prompt import SoftPrompt
    from delrec.stages.finetune import load_adapter

    cfg = ctx.cfg
    hint = teachers[cfg.teacher.models[0]] if method.endswith("+hint") else None
    valid = lsr_examples(cfg, prompt_builder(cfg, ctx.dataset), ctx.cands["valid"], soft_path is not None, hint)
    scorer = new_lm(cfg)
    load_adapter(scorer.backbone, cfg.stage2, folder / "adapter")
    soft = SoftPrompt.load(soft_path).to(scorer.backbone.device) if soft_path else None
    save_scores(folder, score_examples(scorer, valid, soft, batch_size=cfg.eval.batch_size, desc=f"valid {method}"),
                "valid_scores.npy")


def save_scores(folder: Path, scores: np.ndarray, name: str = "test_scores.npy") -> None:
    from delrec.io import atomic_path

    if dist.is_main():
        with atomic_path(Path(folder) / name) as tmp, open(tmp, "wb") as f:
            np.save(f, scores, allow_pickle=False)
    dist.barrier()  # the other processes read it next (fusion)


def run_command(cfg: RunConfig, *, resume: bool = False, until: Until = "evaluate") -> dict:
    """The pipeline up to `until` (teach: teachers only; distill: + stage 1; finetune: + stage 2 without the
    zero-shot and hint rows; evaluate: everything); returns the metrics rows."""
    check_before_training(cfg, until)
    start = time.time()
    ctx = prepare(cfg)
    stamp = provenance(cfg)
    ctx.log.write(stage="run", event="run_start", until=until, resume=resume, **stamp)
    # Fresh rows: results.md says which config produced it, so rows of earlier runs are not carried over.
    metrics = MetricsFile(ctx.run.path("metrics.json"), dataset=ctx.dataset.name, protocol=cfg.data.protocol,
                          candidates=cfg.data.n_candidates, write=dist.is_main(), fresh=True)
    metrics.data["produced_by"] = stamp
    methods = list(cfg.eval.methods) + (["delrec-no-ta", "delrec-no-rps"] if cfg.eval.ablations else [])
    parts: dict[str, float] = {}  # wall seconds of each part of this invocation (a cached part takes ~0)

    def timed(name: str, fn, *args):
        t = time.time()
        out = fn(*args)
        parts[name] = round(parts.get(name, 0.0) + time.time() - t, 1)
        return out

    teachers = timed("teachers", lambda: train_teachers(ctx, metrics))
    teacher = teachers[cfg.teacher.models[0]]
    if "lm-zero-shot" in methods and until == "evaluate":
        header("lm-zero-shot: the untrained LM on the test candidates")
        row = timed("test/lm-zero-shot", lambda: lm_test_row(cfg, prompt_builder(cfg, ctx.dataset), new_lm(cfg), None,
                                                             ctx.cands["test"], "lm-zero-shot"))
        row.pop("scores")
        add_row(ctx, metrics, "lm-zero-shot", row)
    for method in methods if until != "teach" else []:
        variant = method.replace("+hint", "")
        if variant in SOFT_PROMPT_METHODS:
            soft_path, key = timed(f"stage1/{variant}", stage1, ctx, teacher, variant, resume)
            if until == "distill":
                continue
            add_row(ctx, metrics, method, timed(f"stage2/{method}", stage2, ctx, method, soft_path, key, resume))
        elif method == "lsr-only" and until != "distill":
            add_row(ctx, metrics, method, timed(f"stage2/{method}", stage2, ctx, method, None, None, resume))
    if cfg.eval.teacher_hint and until == "evaluate":
        soft_path, key = timed("stage1/delrec", lambda: stage1(ctx, teacher, "delrec", resume))
        add_row(ctx, metrics, "delrec+hint",
                timed("stage2/delrec+hint", lambda: stage2(ctx, "delrec+hint", soft_path, key, resume, teachers)))
    if cfg.eval.fusion and until == "evaluate":
        from delrec.fusion import fusion_rows

        rows = timed("fusion", lambda: fusion_rows(ctx.run, cfg, teachers, ctx.cands, set(metrics.rows)))
        if dist.is_main():
            atomic_write_text(ctx.run.path("fusion.json"), json.dumps({m: r["fusion"] for m, r in rows.items()},
                                                                       indent=2) + "\n")
        for name, row in rows.items():
            add_row(ctx, metrics, name, row)
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
