r"""Training example passes per second, today's stage-1/stage-2 pass against the cost levers, A/B in one run.

    python benchmarks/speed/train_speed.py --config configs/ml-100k.yaml --data-dir $DELREC_DATA/ml-100k \
        --out benchmarks/results/train_speed/levers.json [--quality-examples 600 --valid-users 200]

Speed: every arm trains on the same n training examples with the real stage code (`finetune`, `distill`) for
`--epochs` epochs; per-step wall times come from the run log. Stage-2 arms with `cache_lower` pay a lower
pass per example in their first epoch only, so their rate is reported for the first epoch, for later epochs,
and averaged over all `--epochs`; `stage2_ratio` uses that average (new arm over today's arm);
`stage1_ratio` is the same for stage 1, where "new" is the stage-1 setting of configs/ml-100k.yaml.
Quality (`--quality-examples > 0`): today's arm and the new arm train on the same examples for one epoch and
are scored on the same validation users (all 20 candidates, full model): NDCG@5 for stage 2 (lsr-only),
mean TA/RPS accuracy for stage 1.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from delrec.benchmarking import parser, set_threads, write_result

OFF = {"train_layers": 0, "train_negatives": 0, "cache_lower": True}
STAGE2_ARMS = {  # name -> stage2 levers; "today" is the packed bf16 pass over every block and candidate
    "today": OFF,
    "negatives": OFF | {"train_negatives": 7},
    "top-layers": OFF | {"train_layers": 4, "cache_lower": False},
    "top-layers+cache": OFF | {"train_layers": 4},
    "new": OFF | {"train_layers": 4, "train_negatives": 7},
    # delrec's stage 2: the same levers, its prompts (soft prompt + pattern sentence), a frozen soft prompt
    "new-soft": OFF | {"train_layers": 4, "train_negatives": 7, "soft": True},
}
STAGE1_ARMS = {  # a dotted name is a key outside the stage's section; "new" is what configs/ml-100k.yaml uses
    "today": {"train_negatives": 0},
    "new": {"train_negatives": 7},
    "packed": {"train_negatives": 7, "pack_tasks": True},  # TA + RPS rows in one pass: same gradients (tests)
    "negatives-3": {"train_negatives": 3},
    "no-years": {"train_negatives": 7, "lm.title_years": False},  # titles without their " (1995)": rejected
    # the frozen LM stored in bf16 (no per-op weight casts; the residual stream in bf16 too): 0.94x, rejected
    "bf16-weights": {"train_negatives": 7, "lm.dtype": "bf16", "lm.autocast_bf16": False},
    "history-5": {"train_negatives": 7, "max_history": 5},
    "history-5-negatives-3": {"train_negatives": 3, "max_history": 5},
    "history-3-negatives-3": {"train_negatives": 3, "max_history": 3},
}


def _cfg(args, tmp, stage: str, changes: dict, steps: int, extra=(), evals: int = 1):
    from delrec.config import load_config

    # stage2.lower_states_dir= : no states file (the preset's relative folder would sit in the working
    # directory, where a later invocation's arm would load it and skip the first epoch's lower pass)
    sets = [f"data.data_dir={args.data_dir}", f"out={tmp}", f"{stage}.steps={steps}", f"{stage}.warmup=1",
            "stage2.lower_states_dir=",
            f"{stage}.eval_every={max(1, steps // evals)}", f"{stage}.patience=1000", *extra]
    return load_config(args.config, sets + [f"{k if '.' in k else stage + '.' + k}={v}" for k, v in changes.items()])


def _step_times(log_path: Path, stage: str) -> list[float]:
    rows = [json.loads(x) for x in log_path.read_text().splitlines()]
    t = [r["elapsed_s"] for r in rows if r.get("stage") == stage and "grad_norm" in r]  # step rows
    return [b - a for a, b in zip([0.0] + t[:-1], t)]


def stage2_arm(args, changes: dict, n: int, epochs: int, valid_users: int = 0) -> dict:
    from delrec.evaluate import metric_row, score_examples
    from delrec.lm.adapters import add_adalora
    from delrec.lm.soft_prompt import SoftPrompt
    from delrec.pipeline import new_lm, prepare, prompt_builder
    from delrec.stages.finetune import finetune

    soft_arm = changes.get("soft", False)
    levers = {k: v for k, v in changes.items() if k != "soft"}
    with tempfile.TemporaryDirectory() as tmp:
        probe = _cfg(args, tmp, "stage2", levers, 1)
        steps = max(1, n * epochs // probe.stage2.batch_size)
        cfg = _cfg(args, tmp, "stage2", levers, steps, [f"stage2.max_eval_examples={max(1, valid_users)}"])
        ctx = prepare(cfg)
        builder = prompt_builder(cfg, ctx.dataset)
        train = [builder.lsr(c, soft=soft_arm) for c in ctx.cands["train"][:n]]
        valid = [builder.lsr(c, soft=soft_arm) for c in ctx.cands["valid"][:max(1, valid_users)]]
        scorer = new_lm(cfg)
        # an untrained soft prompt costs what a distilled one does
        soft = SoftPrompt.create(cfg.lm.n_soft, scorer.backbone, init=cfg.lm.soft_init, seed=cfg.seed) \
            if soft_arm else None
        add_adalora(scorer.backbone, cfg.stage2, seed=cfg.seed)
        t0 = time.time()
        finetune(scorer, soft, train, valid[:1], cfg.stage2, Path(tmp) / "s2", seed=cfg.seed,
                 eval_batch_size=cfg.eval.batch_size)
        wall = time.time() - t0
        dt = _step_times(Path(tmp) / "s2" / "log.jsonl", "stage2")
        per_epoch = max(1, len(dt) // epochs)
        b = cfg.stage2.batch_size
        out = {"changes": changes, "steps": steps, "batch_size": b, "examples": steps * b, "wall_s": round(wall, 1),
               "examples_per_s": steps * b / sum(dt),
               "first_epoch_examples_per_s": per_epoch * b / sum(dt[:per_epoch]),
               "later_epochs_examples_per_s": (len(dt) - per_epoch) * b / max(sum(dt[per_epoch:]), 1e-9)
               if len(dt) > per_epoch else None}
        if valid_users:
            s = score_examples(scorer, valid, soft, batch_size=cfg.eval.batch_size, desc="valid")
            out["valid"] = {k: v for k, v in metric_row(s, [e.label for e in valid]).items()
                            if k in ("hr@1", "hr@5", "ndcg@5", "ci95", "n")}
        return out


def stage1_arm(args, changes: dict, steps: int, valid_users: int = 0, workdir: str = "", evals: int = 4) -> dict:
    from delrec.lm.soft_prompt import SoftPrompt
    from delrec.lm_rows import stage1_builder
    from delrec.metrics import MetricsFile
    from delrec.pipeline import new_lm, prepare, train_teachers
    from delrec.prompts.examples import build_stage1
    from delrec.stages.distill import Stage1Data, distill

    # The run folder `workdir` is shared by the stage-1 arms, so the teacher trains once (cached by its config).
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _cfg(args, workdir, "stage1", changes, steps, [f"stage1.max_eval_examples={max(1, valid_users)}",
                                                             "teacher.models=[sasrec]"], evals=evals if valid_users else 1)
        ctx = prepare(cfg)
        teacher = train_teachers(ctx, MetricsFile(Path(tmp) / "m.json", write=False))["sasrec"]
        builder = stage1_builder(cfg, ctx.dataset)
        tr_h = [e.history for e in ctx.split.train]
        va_h = [e.history for e in ctx.split.valid[:max(1, valid_users)]]
        ta, rps = build_stage1(builder, tr_h, teacher.topk(tr_h, cfg.teacher.topk), seed=cfg.seed)
        ta_v, rps_v = build_stage1(builder, va_h, teacher.topk(va_h, cfg.teacher.topk), seed=cfg.seed + 1)
        scorer = new_lm(cfg)
        soft = SoftPrompt.create(cfg.lm.n_soft, scorer.backbone, init=cfg.lm.soft_init, seed=cfg.seed)
        if not valid_users:
            ta_v, rps_v = ta_v[:1], rps_v[:1]
        t0 = time.time()
        res = distill(scorer, soft, Stage1Data(ta, rps, ta_v, rps_v), cfg.stage1, Path(tmp) / "s1", seed=cfg.seed,
                      eval_batch_size=cfg.eval.batch_size)
        wall = time.time() - t0
        dt = _step_times(Path(tmp) / "s1" / "log.jsonl", "stage1")
        b = 2 * cfg.stage1.batch_size  # one batch per task per step
        out = {"changes": changes, "steps": steps, "examples": steps * b, "wall_s": round(wall, 1),
               "examples_per_s": steps * b / sum(dt)}
        if valid_users:
            out["valid_accuracy"] = res["best_valid"]
            rows = [json.loads(x) for x in (Path(tmp) / "s1" / "log.jsonl").read_text().splitlines()]
            out["valid_curve"] = [{k: v for k, v in r.items() if k == "step" or k.startswith("valid_acc")}
                                  for r in rows if r.get("event") == "eval_tasks"]
        return out


def main(argv=None) -> int:
    # --out is required: without --update an invocation replaces the whole file, arms of other machines too
    ap = parser(__doc__, run_config=True, threads=2, out="",
                out_help="the result JSON, e.g. benchmarks/results/train_speed/levers.json (required)")
    ap.add_argument("--n", type=int, default=64, help="training examples of the speed arms")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--stage1-steps", type=int, default=4)
    ap.add_argument("--quality-examples", type=int, default=0)
    ap.add_argument("--stage1-quality-steps", type=int, default=0)
    ap.add_argument("--valid-users", type=int, default=200)
    ap.add_argument("--stage1-valid-users", type=int, default=64)
    ap.add_argument("--arms", default=",".join(STAGE2_ARMS), help="stage-2 speed arms; empty: none")
    ap.add_argument("--stage1-arms", default=",".join(STAGE1_ARMS))
    ap.add_argument("--stage1-quality-arms", default="today,new")
    ap.add_argument("--stage1-baseline", default="today", help="the arm stage1_ratio (and stage1_ratios) divide by")
    ap.add_argument("--stage1-evals", type=int, default=4, help="validations per stage-1 quality arm")
    ap.add_argument("--note", default="", help="how the machine was loaded, what was left out")
    ap.add_argument("--update", action="store_true",
                    help="keep what --out holds for a stage this invocation does not measure (its command too)")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    doc = {"threads": args.threads, "stage2": {}, "stage1": {}, "note": args.note}  # the command: in provenance
    measured = {"stage2": bool(args.arms.strip(",")) or args.quality_examples > 0,
                "stage1": args.stage1_steps > 0 or args.stage1_quality_steps > 0}
    doc["quality"] = {}
    if args.update and args.out.exists():
        old = json.loads(args.out.read_text())
        for kept in (s for s, m in measured.items() if not m):  # the stages this invocation leaves alone
            doc[kept] = old.get(kept, {})
            doc |= {k: old[k] for k in (f"{kept}_ratio", f"{kept}_ratio_single_epoch") if k in old}
            doc["quality"][kept] = old.get("quality", {}).get(kept, {})
            # A kept stage keeps its command (and its stamp where known): the file's own stamp is this run's.
            stamp = old.get("provenance", {})
            own = f"{kept}_command" not in old  # the invocation that wrote `old` measured this stage
            doc[f"{kept}_command"] = old.get(f"{kept}_command", old.get("command", stamp.get("command")))
            if prov := old.get(f"{kept}_provenance", stamp if own else None):
                doc[f"{kept}_provenance"] = prov
            doc[f"{kept}_note"] = old.get(f"{kept}_note", old.get("note", ""))

    def save():  # after every arm, so an interrupted invocation keeps what it measured
        write_result(args.out, doc)

    for name in filter(None, args.arms.split(",")):
        doc["stage2"][name] = stage2_arm(args, STAGE2_ARMS[name], args.n, args.epochs)
        print("stage2", name, round(doc["stage2"][name]["examples_per_s"], 3), flush=True)
        save()
    if "new" in doc["stage2"] and "today" in doc["stage2"]:
        doc["stage2_ratio"] = doc["stage2"]["new"]["examples_per_s"] / doc["stage2"]["today"]["examples_per_s"]
    teacher_dir = tempfile.mkdtemp(prefix="train_speed_")
    if args.stage1_steps:
        for name in filter(None, args.stage1_arms.split(",")):
            doc["stage1"][name] = stage1_arm(args, STAGE1_ARMS[name], args.stage1_steps, workdir=teacher_dir)
            print("stage1", name, round(doc["stage1"][name]["examples_per_s"], 3), flush=True)
            save()
        if base := doc["stage1"].get(args.stage1_baseline):
            doc["stage1_baseline"] = args.stage1_baseline
            doc["stage1_ratios"] = {k: v["examples_per_s"] / base["examples_per_s"] for k, v in doc["stage1"].items()}
            if "new" in doc["stage1"] and args.stage1_baseline != "new":
                doc["stage1_ratio"] = doc["stage1_ratios"]["new"]
    if args.quality_examples:
        doc["quality"]["stage2"] = {}
        for name in ("today", "new"):
            doc["quality"]["stage2"][name] = stage2_arm(args, STAGE2_ARMS[name], args.quality_examples, 1,
                                                        args.valid_users)
            save()
    if args.stage1_quality_steps:
        doc["quality"]["stage1"] = {}
        for name in filter(None, args.stage1_quality_arms.split(",")):
            doc["quality"]["stage1"][name] = stage1_arm(args, STAGE1_ARMS[name], args.stage1_quality_steps,
                                                        args.stage1_valid_users, workdir=teacher_dir,
                                                        evals=args.stage1_evals)
            save()
    save()
    print(json.dumps({k: doc.get(k) for k in ("stage1_ratio", "stage2_ratio")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
