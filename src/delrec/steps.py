"""The steps of `delrec run`, each cached in the run directory under a hash of its inputs: the run's data and
candidate files, the teachers (and delrec+hint's training-hint teacher), stage 1 per soft-prompt variant,
stage 2 per LM method with its test row. `pipeline.run_command` puts them in order."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from delrec import DelrecError, dist
from delrec.config import RunConfig
from delrec.console import header
from delrec.data.candidates import CandidateSet, make_candidates, read_candidates, write_candidates
from delrec.data.registry import load_dataset
from delrec.data.sequences import Dataset
from delrec.data.split import Split
from delrec.evaluate import score_examples
from delrec.lm_rows import (
    build_split,
    lm_test_row,
    lsr_examples,
    new_lm,
    prompt_builder,
    set_users,
    stage1_builder,
)
from delrec.methods import METHODS
from delrec.metrics import MetricsFile
from delrec.prompts.examples import build_stage1
from delrec.runs import RunDir, digest, fresh, is_done, mark_done
from delrec.stages.loop import JsonlLog

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


def teacher_before_targets(ctx: Context, teacher, which: str):
    """The teacher whose hints go into delrec+hint's training prompts (which = eval.hint_train_teacher), or
    whose vectors feed delrec+user's and delrec+hybrid's projectors (eval.projector_teacher). The run's
    teacher trained on every training target, so its hints are better on training examples than on test
    users and the LM would learn to trust them more than it should; by default a second copy, trained on
    sequences cut before each user's training targets, writes them (cached in teacher/<model>-before-targets)."""
    from delrec.data.split import before_training_targets
    from delrec.teachers.teacher import Teacher
    from delrec.teachers.train import train_teacher

    cfg = ctx.cfg
    if which == "same":
        return teacher
    model, folder, key = cfg.teacher.models[0], ctx.run.hint_teacher_dir(cfg), ctx.run.hint_teacher_key(cfg)
    if not is_done(folder, key):
        header(f"teacher {model}-before-targets: for the training hints of the hint rows")
        out_dir = fresh(folder, False)
        if dist.is_main():
            with dist.main_takes_all_threads():
                train_teacher(model, cfg.teacher, ctx.dataset, before_training_targets(ctx.split), seed=cfg.seed,
                              out_dir=out_dir)
        mark_done(folder, {"model": model, "trained_on": "training sequences cut before their LM training targets"},
                  key)
    return Teacher.load(folder)


def projector_teacher(ctx: Context, teachers, method: str):
    """Whose vectors feed delrec+user's and delrec+hybrid's projectors (the same teacher for training,
    validation and test); None for every other row."""
    if not (METHODS[method].user or METHODS[method].hybrid):
        return None
    return teacher_before_targets(ctx, teachers[ctx.cfg.teacher.models[0]], ctx.cfg.eval.projector_teacher)


def new_projector(cfg: RunConfig, method: str, soft, teacher, train_sets, valid_sets, device) -> tuple:
    """(prompt, train user states, valid user states) of a new delrec+user or delrec+hybrid prompt (the states
    None for hybrid: its examples carry their items)."""
    from delrec.lm.teacher_prompts import HybridPrompt, UserPrompt, item_vectors

    ev = cfg.eval
    if METHODS[method].hybrid:
        prompt = HybridPrompt(soft, item_vectors(teacher), ev.projector_rank, seed=cfg.seed, at=ev.projector_at)
        return prompt.to(device), None, None
    train_users, valid_users = set_users(teacher, train_sets), set_users(teacher, valid_sets)
    prompt = UserPrompt(soft, train_users.shape[1], ev.projector_rank, seed=cfg.seed, at=ev.projector_at)
    return prompt.to(device), train_users, valid_users


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
    tasks = "+".join(METHODS[variant].stage1_tasks).upper()
    header(f"stage 1 ({variant}): soft prompt, {cfg.stage1.steps} steps on {tasks}, LM frozen")
    folder = fresh(folder, resume)
    builder = stage1_builder(cfg, ctx.dataset)
    k = cfg.teacher.topk
    train_h = [e.history for e in ctx.split.train]
    valid_h = [e.history for e in ctx.split.valid[:cfg.stage1.max_eval_examples]]
    ta_tr, rps_tr = build_stage1(builder, train_h, teacher.topk(train_h, k), seed=cfg.seed)
    ta_va, rps_va = build_stage1(builder, valid_h, teacher.topk(valid_h, k), seed=cfg.seed + 1)
    scorer = new_lm(cfg)
    soft = SoftPrompt.create(cfg.lm.n_soft, scorer.backbone, init=cfg.lm.soft_init, seed=cfg.seed)
    result = distill(scorer, soft, Stage1Data(ta_tr, rps_tr, ta_va, rps_va), cfg.stage1, folder, seed=cfg.seed,
                     tasks=METHODS[variant].stage1_tasks, resume=resume, log=ctx.log,
                     eval_batch_size=cfg.eval.batch_size, name=f"stage1/{variant}")
    mark_done(folder, require_finished(result, f"stage 1 ({variant})"), key)
    return folder / "soft_prompt.safetensors", key


def stage2(ctx: Context, method: str, soft_path: Path | None, stage1_key: str | None, resume: bool,
           teachers=None) -> dict:
    from delrec.lm.adapters import add_adalora
    from delrec.lm.soft_prompt import SoftPrompt
    from delrec.stages.finetune import finetune

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
    m = METHODS[method]
    teacher = teachers[cfg.teacher.models[0]] if m.reads_teacher else None
    hint, prior = m.teacher_roles(teacher)
    train_hint, train_prior = m.teacher_roles(
        teacher_before_targets(ctx, teacher, cfg.eval.hint_train_teacher) if teacher else None)
    builder = prompt_builder(cfg, ctx.dataset)
    slots = m.hybrid
    train = lsr_examples(cfg, builder, ctx.cands["train"], use_soft, train_hint, slots, train_prior)
    valid = lsr_examples(cfg, builder, ctx.cands["valid"], use_soft, hint, slots, prior)
    if prior is not None:  # the curve's reference: the validation metric of the teacher's prior alone
        from delrec.evaluate import ndcg5

        shown = valid[:cfg.stage2.max_eval_examples]
        ctx.log.write(stage=f"stage2/{method}", event="prior_valid", metric="ndcg@5",
                      valid=float(ndcg5(np.array([e.prior for e in shown]), [e.label for e in shown])))
    scorer = new_lm(cfg)
    soft = SoftPrompt.load(soft_path).to(scorer.backbone.device) if use_soft else None
    users_from, projected = projector_teacher(ctx, teachers, method), None
    if users_from is not None:  # the projector trains with the adapters, the stage-1 prompt inside it frozen
        from delrec.lm.teacher_prompts import projector_scorer

        projected = new_projector(cfg, method, soft, users_from, ctx.cands["train"], ctx.cands["valid"],
                                  scorer.backbone.device)
        soft = None
    add_adalora(scorer.backbone, cfg.stage2, seed=cfg.seed)
    start = time.time()
    s2 = cfg.stage2
    if s2.lower_states_dir and not Path(s2.lower_states_dir).expanduser().is_absolute():  # inside the run folder
        s2 = dataclasses.replace(s2, lower_states_dir=str(ctx.run.root / s2.lower_states_dir))
    result = finetune(scorer, soft, train, valid, s2, folder, seed=cfg.seed, resume=resume, log=ctx.log,
                      eval_batch_size=cfg.eval.batch_size, name=f"stage2/{method}", projector=projected,
                      # the same prompts and soft prompt as its soft-prompt row: that row's stored lower states
                      lower_tag=m.soft_prompt if m.residual or projected and m.user
                      and cfg.eval.projector_at == "upper" else None,
                      curriculum=slots and cfg.eval.hybrid_curriculum)
    require_finished(result, f"stage 2 ({method})")
    train_s = round(time.time() - start, 1)  # this process only: a resumed run counts from its restart
    test_start = time.time()
    if projected is not None:  # its test pass: the scorer the projected part needs (upper: the adapted blocks)
        soft, scorer = projected[0], projector_scorer(scorer, projected[0], cfg.stage2.train_layers)
    row = lm_test_row(cfg, builder, scorer, soft, ctx.cands["test"], method, hint,
                      users_from if m.user else None, slots, prior)
    if cfg.eval.fusion:  # fusion picks its weight on these, never on the test file
        save_scores(folder, score_examples(scorer, valid, soft, batch_size=cfg.eval.batch_size,
                                           desc=f"valid {method}", users=projected[2] if projected else None),
                    "valid_scores.npy")
    row |= {"test_s": round(time.time() - test_start, 1), "examples_seen": result["steps"] * cfg.stage2.batch_size * cfg.stage2.grad_accum,
            "best_step": result["best_step"], "train_s": train_s, "valid_curve": result["evals"]}
    save_scores(folder, row.pop("scores"))
    # Relative to the run folder, so a moved or copied run still finds its soft prompt.
    soft_rel = soft_path.relative_to(ctx.run.root).as_posix() if soft_path else None
    mark_done(folder, result | {"test": row, "soft_prompt": soft_rel}, key)
    return row


def score_validation(ctx: Context, method: str, folder: Path, soft_path: Path | None, teachers=None) -> None:
    """valid_scores.npy of a finished stage 2: its trained adapter on the validation candidate file."""
    from delrec.lm.adapters import load_adapter
    from delrec.lm.soft_prompt import SoftPrompt
    from delrec.lm.teacher_prompts import load_projector, projector_scorer

    cfg = ctx.cfg
    m = METHODS[method]
    teacher = teachers[cfg.teacher.models[0]] if m.reads_teacher else None
    hint, prior = m.teacher_roles(teacher)
    valid = lsr_examples(cfg, prompt_builder(cfg, ctx.dataset), ctx.cands["valid"], soft_path is not None, hint,
                         m.hybrid, prior)
    scorer = new_lm(cfg)
    load_adapter(scorer.backbone, cfg.stage2, folder / "adapter")
    soft = SoftPrompt.load(soft_path).to(scorer.backbone.device) if soft_path else None
    users = None
    if m.user or m.hybrid:  # a hybrid prompt's file holds its item vectors: only delrec+user needs the teacher
        soft = load_projector(folder, m.hybrid, scorer.backbone.device)
        if m.user:
            users = set_users(projector_teacher(ctx, teachers, method), ctx.cands["valid"])
        scorer = projector_scorer(scorer, soft, cfg.stage2.train_layers)
    save_scores(folder, score_examples(scorer, valid, soft, batch_size=cfg.eval.batch_size, desc=f"valid {method}",
                                       users=users), "valid_scores.npy")


def save_scores(folder: Path, scores: np.ndarray, name: str = "test_scores.npy") -> None:
    from delrec.io import atomic_path

    if dist.is_main():
        with atomic_path(Path(folder) / name) as tmp, open(tmp, "wb") as f:
            np.save(f, scores, allow_pickle=False)
    dist.barrier()  # the other processes read it next (fusion)
