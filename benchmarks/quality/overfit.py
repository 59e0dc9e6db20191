"""Can stage 2 learn at all? lsr-only trained on a few training examples and scored on those same examples.

    python benchmarks/quality/overfit.py --config configs/ml-100k.yaml --data-dir $DELREC_DATA/ml-100k \
        --n 64 --steps 200 --out benchmarks/results/overfit/lsr-only-64.json [--set stage2.lr=0.01 ...]

Uses the real stage-2 code (`stages.finetune.finetune`, AdaLoRA, the configured scorer and cost levers) with
the training set as its validation set and HR@1 as the selection metric, so the curve is training-set HR@1
against optimiser steps. Writes the curve, the per-step losses, the config and the wall time.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from delrec.benchmarking import command, parser, set_threads, write_result


def main(argv=None) -> int:
    ap = parser(__doc__, run_config=True, threads=2, out="",
                out_help="the result, e.g. benchmarks/results/overfit/<name>.json")
    ap.add_argument("--n", type=int, default=64, help="training examples (the first n of the training file)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args(argv)
    from delrec.config import load_config
    from delrec.evaluate import accuracy, score_examples
    from delrec.pipeline import new_lm, prepare, prompt_builder
    from delrec.stages.finetune import add_adalora, finetune

    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [f"data.data_dir={args.data_dir}", f"out={tmp}",
                                        f"stage2.steps={args.steps}", f"stage2.eval_every={args.eval_every}",
                                        f"stage2.max_eval_examples={args.n}", "stage2.patience=1000",
                                        *args.overrides])
        ctx = prepare(cfg)
        builder = prompt_builder(cfg, ctx.dataset)
        examples = [builder.lsr(c, soft=False) for c in ctx.cands["train"][:args.n]]
        labels = [e.label for e in examples]
        scorer = new_lm(cfg)
        start_hr1 = accuracy(score_examples(scorer, examples, None, batch_size=cfg.eval.batch_size), labels)
        add_adalora(scorer.backbone, cfg.stage2, seed=cfg.seed)
        t0 = time.time()
        result = finetune(scorer, None, examples, examples, cfg.stage2, Path(tmp) / "stage2", seed=cfg.seed,
                          eval_batch_size=cfg.eval.batch_size, metric=accuracy)
        wall = time.time() - t0
        log = [json.loads(line) for line in (Path(tmp) / "stage2" / "log.jsonl").read_text().splitlines()]
    curve = [[0, start_hr1]] + [list(e) for e in result["evals"]]
    losses = [[r["step"], round(r["loss"], 4)] for r in log if "loss" in r]
    doc = {"train_hr@1": curve[-1][1], "best_train_hr@1": max(v for _, v in curve), "n_examples": args.n,
           "curve": {"steps": [s for s, _ in curve], "train_hr@1": [v for _, v in curve]}, "loss": losses,
           "grad_norm": [[r["step"], round(r["grad_norm"], 4)] for r in log if "grad_norm" in r],
           "wall_s": round(wall, 1), "examples_seen": args.steps * cfg.stage2.batch_size,
           "stage2": dataclasses.asdict(cfg.stage2), "lm": dataclasses.asdict(cfg.lm)}
    write_result(args.out, doc, config=cfg, cmd=command(None if argv is None else [__file__, *argv]))
    print(json.dumps({k: doc[k] for k in ("train_hr@1", "best_train_hr@1", "wall_s")}), doc["curve"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
