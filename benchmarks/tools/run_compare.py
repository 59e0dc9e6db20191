"""One stage-2 method across finished run folders: validation curve, loss, test row and training speed.

    python benchmarks/tools/run_compare.py runs/ml-100k-b2k-letter runs/ml-100k-b2k runs/ml-100k-preset-timed \
        --steps 250 --out benchmarks/results/scorer_choice/ml-100k-index-letter-2k.json

Everything is read from each run's log.jsonl, metrics.json and config.yaml. Speed: training examples per
second over steps 2..`--steps` from the logged per-step elapsed times, leaving out step 1 (model warm-up)
and each step that follows a validation (its time includes the validation).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from delrec.benchmarking import command, parser, write_result


def summarise(run: Path, method: str, steps: int) -> dict:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    stage = f"stage2/{method}"
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    train = {r["step"]: r for r in log if r.get("stage") == stage and "loss" in r}
    evals = [r for r in log if r.get("stage") == stage and r.get("event") == "eval"]
    if not train:
        raise SystemExit(f"{run / 'log.jsonl'}: no training steps of {stage}")
    after_eval = {r["step"] + 1 for r in evals}
    timed = [s for s in range(2, steps + 1) if s in train and s - 1 in train and s not in after_eval]
    seconds = sum(train[s]["elapsed_s"] - train[s - 1]["elapsed_s"] for s in timed)
    batch = cfg["stage2"]["batch_size"] * cfg["stage2"].get("grad_accum", 1)
    losses = [train[s]["loss"] for s in sorted(train)]
    row = json.loads((run / "metrics.json").read_text())["rows"][method]
    return {"run": run.name, "config": cfg,
            "valid_curve": [{"step": r["step"], "valid_ndcg@5": r["valid"]} for r in evals],
            "mean_loss_per_50_steps": [sum(losses[i:i + 50]) / len(losses[i:i + 50]) for i in range(0, len(losses), 50)],
            "test": {k: row[k] for k in ("hr@1", "hr@5", "ndcg@5", "n", "ci95")},
            "train_s": row.get("train_s"), "examples_seen": row.get("examples_seen"),
            "speed": {"steps_timed": len(timed), "examples_per_s": batch * len(timed) / seconds if seconds else None}}


def main(argv=None) -> int:
    ap = parser(__doc__, out="",
                out_help="the result, e.g. benchmarks/results/<question>/<dataset>-<what>.json")
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--method", default="lsr-only")
    ap.add_argument("--steps", type=int, default=250, help="the first steps whose speed is compared")
    ap.add_argument("--note", default="", help="how each run was made and how the machine was loaded")
    args = ap.parse_args(argv)
    doc = {"note": args.note, "method": args.method,
           "runs": [summarise(r, args.method, args.steps) for r in args.runs]}
    write_result(args.out, doc, cmd=command(None if argv is None else [__file__, *argv]))
    for r in doc["runs"]:
        print(r["run"], [round(e["valid_ndcg@5"], 3) for e in r["valid_curve"]], "test", r["test"]["hr@1"],
              round(r["test"]["ndcg@5"], 3), "ex/s", r["speed"]["examples_per_s"] and round(r["speed"]["examples_per_s"], 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
