"""Use a trained run: rank candidates for a history (Python API + `delrec recommend`) and score any candidate
file (`delrec evaluate`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from delrec import DelrecError
from delrec.choices import SOFT_PROMPT_METHODS
from delrec.config import load_config
from delrec.data.candidates import CandidateSet, read_candidates, sample_negatives
from delrec.data.registry import load_dataset
from delrec.evaluate import metric_row, score_examples
from delrec.metrics import MetricsFile, format_table
from delrec.prompts.examples import PromptBuilder


def trained_methods(run_dir: Path) -> dict[str, Path]:
    """method name -> its finished stage-2 folder for the run's current config.yaml."""
    from delrec.runs import RunDir

    run = RunDir(run_dir)
    cfg = load_config(str(run.path("config.yaml")))
    out = {}
    # delrec+hint needs the teacher at inference: not served here
    for method in ["lsr-only", *SOFT_PROMPT_METHODS]:
        key = run.stage1_key(cfg, method) if method in SOFT_PROMPT_METHODS else None
        folder = run.stage2_dir(cfg, method, key)
        if (folder / "done.json").exists():
            out[method] = folder
    return out


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
    def __init__(self, cfg, dataset, scorer, soft, builder: PromptBuilder, method: str):
        self.cfg, self.dataset, self.scorer, self.soft, self.builder, self.method = (
            cfg, dataset, scorer, soft, builder, method)

    @classmethod
    def load(cls, run_dir: str | Path, method: str = "delrec") -> Recommender:
        from delrec.lm.soft_prompt import SoftPrompt
        from delrec.pipeline import new_lm, prompt_builder
        from delrec.stages.finetune import load_adapter

        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").exists():
            raise DelrecError(f"{run_dir}: not a delrec run directory (no config.yaml)")
        cfg = load_config(str(run_dir / "config.yaml"))
        methods = trained_methods(run_dir)
        if method not in methods:
            raise DelrecError(f"{run_dir}: method {method!r} has not been trained; trained: {sorted(methods) or 'none'}")
        folder = methods[method]
        done = json.loads((folder / "done.json").read_text())
        scorer = new_lm(cfg)
        load_adapter(scorer.backbone, cfg.stage2, folder / "adapter")
        soft_path = stored_path(run_dir, done.get("soft_prompt"))
        soft = SoftPrompt.load(soft_path).to(scorer.backbone.device) if soft_path else None
        dataset = load_dataset(cfg.data)
        builder = prompt_builder(cfg, dataset)
        return cls(cfg, dataset, scorer, soft, builder, method)

    def _example(self, cs: CandidateSet):
        return self.builder.lsr(cs, soft=self.soft is not None)

    def recommend(self, history: list[str], candidates: list[str] | None = None, *, top: int = 10, seed: int = 0):
        """[(title, raw id, score)] best first. Without candidates, n_candidates - 1 random unseen items plus
        nothing else are ranked (the LM ranks a candidate list, never the whole catalogue)."""
        cat = self.dataset.catalog
        missing = [x for x in [*history, *(candidates or [])] if x not in cat]
        if missing:
            raise DelrecError(f"unknown item id(s): {', '.join(missing[:5])}")
        hist = tuple(cat.dense(x) for x in history)
        if candidates:
            cands = tuple(cat.dense(x) for x in candidates)
        else:
            cands = tuple(sample_negatives(random.Random(seed), len(cat), set(hist), self.cfg.data.n_candidates))
        cs = CandidateSet(-1, hist, cands, cands[0])
        scores = score_examples(self.scorer, [self._example(cs)], self.soft)[0]
        order = sorted(range(len(cands)), key=lambda i: -scores[i])[:top]
        return [(cat.titles[cands[i]], cat.raw_ids[cands[i]], float(scores[i])) for i in order]

    def evaluate(self, sets: list[CandidateSet]) -> dict:
        examples = [self._example(c) for c in sets]
        scores = score_examples(self.scorer, examples, self.soft, batch_size=self.cfg.eval.batch_size)
        return metric_row(scores, [e.label for e in examples], n_boot=self.cfg.eval.bootstrap)


def evaluate_command(run: str, candidates: str, out: str | None = None) -> dict:
    """Score every trained LM method of `run` on a candidate JSONL (raw ids; made by delrec or elsewhere)."""
    run_dir = Path(run)
    methods = trained_methods(run_dir)
    if not methods:
        raise DelrecError(f"{run_dir}: no trained stage-2 method to evaluate")
    out_path = Path(out) if out else run_dir / "evaluations" / f"{Path(candidates).stem}.metrics.json"
    metrics = None
    for method in methods:
        rec = Recommender.load(run_dir, method)
        sets = read_candidates(candidates, rec.dataset)
        if metrics is None:
            metrics = MetricsFile(out_path, dataset=rec.dataset.name, protocol=rec.cfg.data.protocol,
                                  candidates=len(sets[0].candidates))
        metrics.add(method, rec.evaluate(sets))
    print(format_table(metrics.rows))
    print(f"wrote {out_path}")
    return metrics.rows
