"""Use a trained run: rank candidates for a history (Python API + `delrec recommend`) and score every method
of the run on any candidate file (`delrec evaluate`)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

from delrec import DelrecError, dist
from delrec.config import RunConfig, load_config
from delrec.console import header
from delrec.data.candidates import CandidateSet, read_candidates, sample_negatives
from delrec.data.registry import load_dataset
from delrec.data.sequences import Dataset
from delrec.fusion import fused_scores, read_choices
from delrec.io import atomic_write_text
from delrec.methods import METHODS, run_methods
from delrec.metrics import MetricsFile
from delrec.prompts.examples import PromptBuilder
from delrec.runs import RunDir, is_done, stage2_folders

# What the number next to a recommendation is, per lm.scorer (and lm.length_norm): higher is better.
SCORE_MEANING = {
    ("title-likelihood", "mean"): "mean log-probability per token of the title as the answer",
    ("title-likelihood", "sum"): "log-probability of the whole title as the answer (summed over its tokens)",
    ("first-token", "mean"): "log-probability of the title's first token as the answer",
    ("index-letter", "mean"): "log-probability of the candidate's letter as the answer",
}


def score_meaning(cfg: RunConfig, residual: bool = False) -> str:
    norm = cfg.lm.length_norm if cfg.lm.scorer == "title-likelihood" else "mean"
    plus = f" plus {cfg.teacher.models[0]}'s log-probability of it among the candidates" if residual else ""
    return f"{SCORE_MEANING[(cfg.lm.scorer, norm)]}{plus} (lm.scorer={cfg.lm.scorer}; higher is better)"


def run_config(run_dir: Path) -> RunConfig:
    if not (Path(run_dir) / "config.yaml").exists():
        raise DelrecError(f"{run_dir}: not a delrec run directory (no config.yaml)")
    return load_config(str(Path(run_dir) / "config.yaml"))


def trained_methods(run_dir: Path, cfg: RunConfig | None = None) -> dict[str, Path]:
    """method name -> its finished stage-2 folder for the run's config.yaml, in the order runs report them."""
    return stage2_folders(RunDir(run_dir), cfg or run_config(Path(run_dir)))


def trained_teachers(run_dir: Path, cfg: RunConfig) -> dict:
    """model name -> the run's trained teacher, for the teachers trained with the run's current settings."""
    from delrec.teachers.teacher import Teacher

    run = RunDir(run_dir)
    return {m: Teacher.load(run.teacher_dir(cfg, m)) for m in cfg.teacher.models
            if is_done(run.teacher_dir(cfg, m), run.teacher_key(cfg, m))}


def run_user_teacher(run_dir: Path, cfg: RunConfig, teachers: dict):
    """The teacher whose states delrec+user was trained on (eval.projector_teacher): the run's first teacher or
    its copy trained before the training targets (teacher/<model>-before-targets)."""
    from delrec.teachers.teacher import Teacher

    model = cfg.teacher.models[0]
    if cfg.eval.projector_teacher == "same":
        if model not in teachers:
            raise DelrecError(f"{run_dir}: delrec+user needs the trained teacher {model}, which is not in teacher/")
        return teachers[model]
    run = RunDir(run_dir)
    folder = run.hint_teacher_dir(cfg)
    if not is_done(folder, run.hint_teacher_key(cfg)):
        raise DelrecError(f"{run_dir}: delrec+user needs the teacher in {folder.relative_to(run_dir).as_posix()}, "
                          "which is missing or was trained with other teacher settings")
    return Teacher.load(folder)


def stored_path(run_dir: Path, stored: str | None) -> Path | None:
    """A path a run recorded, relative to the run folder. Runs written before stored it relative to the
    directory they were started from (`runs/demo/stage1/...`) or absolute: the part from the stage folder on
    is looked up in `run_dir` first, so a moved or copied old run uses its own files."""
    if not stored:
        return None
    path = Path(stored)
    if not path.is_absolute() and (run_dir / path).exists():
        return run_dir / path
    for i in range(len(path.parts)):
        if path.parts[i] in ("stage1", "stage2", "teacher") and run_dir.joinpath(*path.parts[i:]).exists():
            return run_dir.joinpath(*path.parts[i:])
    return path if path.is_absolute() else run_dir / path


class Recommender:
    """A trained LM method of a run: its scorer (LM + adapter), soft prompt and prompts; `delrec+hint` also
    holds the teacher whose ranking of the candidates goes into each prompt."""

    def __init__(self, cfg, dataset, scorer, soft, builder: PromptBuilder, method: str, hint_teacher=None,
                 fusion: tuple[dict, dict] | None = None, user_teacher=None, slots: bool = False,
                 prior_teacher=None):
        self.cfg, self.dataset, self.scorer, self.soft, self.builder, self.method = (
            cfg, dataset, scorer, soft, builder, method)
        self.hint_teacher = hint_teacher
        self.user_teacher = user_teacher  # delrec+user: `soft` is its per-user prompt, fed this teacher's states
        self.slots = slots  # delrec+hybrid: prompts with item slots, whose vectors `soft` makes
        self.prior_teacher = prior_teacher  # delrec+residual: the LM's scores are added to its log-probabilities
        self.fusion = fusion  # `<method>+fusion`: (its stored choice, the run's teachers)

    @classmethod
    def load(cls, run_dir: str | Path, method: str = "delrec", *, cfg: RunConfig | None = None,
             dataset: Dataset | None = None, teachers: dict | None = None) -> Recommender:
        from delrec.lm.adapters import load_adapter
        from delrec.lm.soft_prompt import SoftPrompt
        from delrec.lm_rows import new_lm, prompt_builder

        run_dir = Path(run_dir)
        cfg = cfg or run_config(run_dir)
        methods = trained_methods(run_dir, cfg)
        choices = read_choices(run_dir)
        fusion, lm_method = None, method
        known = sorted([*methods, *choices]) or "none"
        if method not in METHODS or METHODS[method].kind not in ("lm", "fused"):
            raise DelrecError(f"{run_dir}: {method!r} is not a trained method of delrec; this run has: {known}")
        if METHODS[method].kind == "fused":
            if method not in choices:
                raise DelrecError(f"{run_dir}: no {method!r} in fusion.json (a run with eval.fusion: true writes "
                                  f"it); fused rows here: {sorted(choices) or 'none'}")
            lm_method = choices[method]["lm"]
            teachers = teachers if teachers is not None else trained_teachers(run_dir, cfg)
            fusion = (choices[method], teachers)
        dataset = dataset or load_dataset(cfg.data)
        if lm_method is None:  # teacher-ensemble: the teachers' fused scores, no LM
            return cls(cfg, dataset, None, None, prompt_builder(cfg, dataset), method, None, fusion)
        if lm_method not in methods:
            raise DelrecError(f"{run_dir}: method {method!r} has not been trained; trained: {known}")
        folder = methods[lm_method]
        done = json.loads((folder / "done.json").read_text())
        teacher = None
        if METHODS[lm_method].reads_teacher:
            teachers = teachers if teachers is not None else trained_teachers(run_dir, cfg)
            if cfg.teacher.models[0] not in teachers:
                raise DelrecError(f"{run_dir}: {method} needs the trained teacher {cfg.teacher.models[0]}, "
                                  f"which is not in teacher/")
            teacher = teachers[cfg.teacher.models[0]]
        scorer = new_lm(cfg)
        load_adapter(scorer.backbone, cfg.stage2, folder / "adapter")
        soft_path = stored_path(run_dir, done.get("soft_prompt"))
        soft = SoftPrompt.load(soft_path).to(scorer.backbone.device) if soft_path else None
        user_teacher, m = None, METHODS[lm_method]
        if m.user or m.hybrid:  # the hybrid prompt's file holds its teacher's item vectors: no teacher needed
            from delrec.lm.teacher_prompts import load_projector, projector_scorer

            if m.user:
                teachers = teachers if teachers is not None else trained_teachers(run_dir, cfg)
                user_teacher = run_user_teacher(run_dir, cfg, teachers)
            soft = load_projector(folder, m.hybrid, scorer.backbone.device)
            scorer = projector_scorer(scorer, soft, cfg.stage2.train_layers)
        hint, prior = m.teacher_roles(teacher)
        return cls(cfg, dataset, scorer, soft, prompt_builder(cfg, dataset), method, hint, fusion, user_teacher,
                   m.hybrid, prior)

    def _fused(self, sets: list[CandidateSet], lm_scores):
        """The LM's [N, C] scores, or for a fusion row the fused teacher + w * LM scores."""
        if self.fusion is None:
            return lm_scores
        return apply_choice(self.fusion[0], self.fusion[1], sets, lm_scores)

    def _examples(self, sets: list[CandidateSet]) -> list:
        from delrec.lm_rows import lsr_examples

        return lsr_examples(self.cfg, self.builder, sets, self.soft is not None, self.hint_teacher, self.slots,
                            self.prior_teacher)

    def candidates_for(self, history: list[str], candidates: list[str] | None = None, *, seed: int = 0
                       ) -> CandidateSet:
        """The raw ids as dense ids; without candidates, n_candidates random items outside the history (the
        LM ranks a candidate list, never the whole catalogue)."""
        cat = self.dataset.catalog
        missing = [x for x in [*history, *(candidates or [])] if x not in cat]
        if missing:
            raise DelrecError(f"unknown item id(s): {', '.join(missing[:5])}")
        hist = tuple(cat.dense(x) for x in history)
        if candidates:
            cands = tuple(cat.dense(x) for x in candidates)
        else:
            cands = tuple(sample_negatives(random.Random(seed), len(cat), set(hist), self.cfg.data.n_candidates))
        return CandidateSet(-1, hist, cands, cands[0])

    def recommend(self, history: list[str], candidates: list[str] | None = None, *, top: int = 10, seed: int = 0):
        """[(title, raw id, score)] best first; the score is what `score_meaning` says."""
        from delrec.evaluate import score_examples
        from delrec.lm_rows import set_users

        cs = self.candidates_for(history, candidates, seed=seed)
        users = set_users(self.user_teacher, [cs]) if self.user_teacher is not None else None
        lm = score_examples(self.scorer, self._examples([cs]), self.soft, users=users) if self.scorer else None
        scores = self._fused([cs], lm)[0]
        order = sorted(range(len(cs.candidates)), key=lambda i: -scores[i])[:top]
        cat = self.dataset.catalog
        return [(cat.titles[cs.candidates[i]], cat.raw_ids[cs.candidates[i]], float(scores[i])) for i in order]

    def describe(self, history: list[str], n_given: int, run_dir: str | Path = "") -> list[str]:
        """What `delrec recommend` prints above the ranking: the method, the history's titles, the
        candidates and what the score is."""
        cat, shown = self.dataset.catalog, self.cfg.data.max_history
        titles = "; ".join(f"{x} {cat.titles[cat.dense(x)]}" for x in history if x in cat)
        where = f"run {run_dir}, " if run_dir else ""
        lm = f"lm.backbone={self.cfg.lm.backbone}" if self.scorer else "the teachers only, no LM"
        return [f"method: {self.method} ({where}{lm})",
                f"history, oldest first (the prompt shows the last {shown}): {titles}",
                f"candidates: {n_given} given" if n_given else
                f"candidates: {self.cfg.data.n_candidates} drawn at random from the items outside the history",
                f"score: {score_meaning(self.cfg, self.prior_teacher is not None)}" if self.fusion is None else
                f"score: {fusion_meaning(self.fusion[0])}"]

    def evaluate(self, sets: list[CandidateSet]) -> dict:
        """The metric row on candidate sets, with the [N, C] scores it came from under "scores"."""
        from delrec.evaluate import metric_row
        from delrec.lm_rows import lm_test_row

        row = (lm_test_row(self.cfg, self.builder, self.scorer, self.soft, sets, self.method, self.hint_teacher,
                           self.user_teacher, self.slots, self.prior_teacher)
               if self.scorer else None)  # None: teacher-ensemble
        if self.fusion is None:
            return row
        fused = self._fused(sets, row["scores"] if row else None)
        return metric_row(fused, [c.target_index for c in sets], n_boot=self.cfg.eval.bootstrap) | {
            "scores": fused, "fusion": self.fusion[0]}


def apply_choice(choice: dict, teachers: dict, sets: list[CandidateSet], lm_scores=None):
    """A run's stored fusion choice on new candidate sets."""
    from delrec.teachers.evaluation import candidate_scores

    needed = [m for m in (choice["teacher"], choice.get("second_teacher")) if m]
    missing = [m for m in needed if m not in teachers]
    if missing:
        raise DelrecError(f"fusion needs the trained teacher(s) {', '.join(missing)}, which are not in teacher/")
    return fused_scores(choice, {m: candidate_scores(teachers[m], sets) for m in needed}, lm_scores)


def fusion_meaning(choice: dict) -> str:
    text = f"{choice['teacher']}'s standardised score"
    if choice.get("second_teacher"):
        text = f"({text} + {choice['w_second']:g} x {choice['second_teacher']}'s, standardised again)"
    if choice.get("lm"):
        text += f" + {choice['w']:g} x the LM's ({choice['lm']}) standardised score"
    return text + " (standardised over the candidates; weights chosen on the run's validation users; higher is better)"


def score_every_method(run_dir: Path, cfg: RunConfig, dataset: Dataset, sets: list[CandidateSet]
                       ) -> Iterator[tuple[str, dict]]:
    """(method, row) for every method the run has, in the order `delrec run` reports them: popularity (counted
    again from the run's training split), each trained teacher, lm-zero-shot (when the run's eval.methods has
    it) and each trained LM method, delrec+hint included."""
    from delrec.evaluate import metric_row
    from delrec.lm_rows import build_split, zero_shot_row
    from delrec.teachers.evaluation import evaluate_teacher
    from delrec.teachers.train import train_teacher

    n_boot = cfg.eval.bootstrap
    popularity = train_teacher("popularity", cfg.teacher, dataset, build_split(cfg, dataset), seed=cfg.seed,
                               progress=False)
    yield "popularity", evaluate_teacher(popularity, None, sets, n_boot=n_boot)
    teachers = trained_teachers(run_dir, cfg)
    for model, teacher in teachers.items():
        yield model, evaluate_teacher(teacher, None, sets, n_boot=n_boot)
    for name in run_methods(cfg.eval):
        if not METHODS[name].stage2:
            header(f"{name}: the untrained LM")
            yield name, zero_shot_row(cfg, dataset, sets, name)
    lm_scores = {}
    for method, folder in trained_methods(run_dir, cfg).items():
        header(f"{method}: the trained adapter in {folder.relative_to(run_dir).as_posix()}")
        row = Recommender.load(run_dir, method, cfg=cfg, dataset=dataset, teachers=teachers).evaluate(sets)
        lm_scores[method] = row.pop("scores")
        yield method, row
    labels = [c.target_index for c in sets]
    choices = read_choices(run_dir)
    for name, choice in ((m, choices[m]) for m in METHODS if m in choices):  # fused rows: no LM pass again
        if choice.get("lm") is None or choice["lm"] in lm_scores:
            fused = apply_choice(choice, teachers, sets, lm_scores.get(choice.get("lm")))
            yield name, metric_row(fused, labels, n_boot=n_boot) | {"fusion": choice}


def evaluate_command(run: str, candidates: str, out: str | None = None) -> dict:
    """Score every method of `run` on a candidate JSONL (raw ids of the run's dataset; made by delrec or
    elsewhere, for users the run may never have seen: the history comes from the file). Writes
    <out>.metrics.json and a results table beside it (<name>.results.md)."""
    from delrec.report import results_markdown, results_table
    from delrec.runs import provenance

    run_dir, path = Path(run), Path(candidates)
    cfg = run_config(run_dir)
    dataset = load_dataset(cfg.data)
    sets = read_candidates(path, dataset)  # before any model loads: a bad file is named at once
    out_path = Path(out) if out else run_dir / "evaluations" / f"{path.stem}.metrics.json"
    main = dist.is_main()  # under torchrun every process scores its share; one writes
    metrics = MetricsFile(out_path, dataset=dataset.name, protocol=cfg.data.protocol,
                          candidates=len(sets[0].candidates), fresh=True, write=main)
    stamp = provenance(cfg) | {"config": (run_dir / "config.yaml").as_posix()}
    metrics.data |= {"candidates_file": str(path), "run": str(run_dir), "produced_by": stamp}
    for method, row in score_every_method(run_dir, cfg, dataset, sets):
        metrics.add(method, row)
    table_path = out_path.with_name(out_path.name.removesuffix(".json").removesuffix(".metrics") + ".results.md")
    source = f"Scored by `delrec evaluate` on {path} ({len(sets)} examples) with the models of run {run_dir}."
    if main:
        atomic_write_text(table_path, results_markdown("Evaluation", metrics.data, cfg, source))
        print(results_table(metrics.rows, cfg))
        print(f"wrote {out_path} and {table_path}")
    return metrics.rows
