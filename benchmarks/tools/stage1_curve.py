"""Stage 1's validation curve (TA and RPS accuracy against stage-1 examples) from a run's log.jsonl.

    python benchmarks/tools/stage1_curve.py runs/ml100k-stage1-curve --dataset ml-100k \
        --command "$(cat runs/ml100k-stage1-curve.cmd)"     # -> benchmarks/results/stage1_curve/ml-100k.{json,png}

Reads the `eval_tasks` records of the stage-1 part (`stage1/...`) and the run's config.yaml (batch per task,
validation users per task); writes the curve, the best step by the mean of the two accuracies (what
`distill` selects on), whether early stopping ended the run (`patience` evaluations without a better mean),
and one standard error of each accuracy at its validation size. The plot needs matplotlib (`[plots]` extra).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from delrec.benchmarking import RESULTS, parser, write_result


def curve(run: Path) -> dict:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    s1 = cfg["stage1"]
    evals = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
             if r.get("event") == "eval_tasks" and str(r.get("stage", "")).startswith("stage1")]
    if not evals:
        raise SystemExit(f"{run / 'log.jsonl'}: no stage-1 eval_tasks records")
    points = [{"step": r["step"], "examples": r["step"] * s1["batch_size"] * 2 * s1.get("grad_accum", 1),
               "ta": r["valid_acc_ta"], "rps": r["valid_acc_rps"],
               "mean": round((r["valid_acc_ta"] + r["valid_acc_rps"]) / 2, 5)} for r in evals]
    best = max(points, key=lambda p: p["mean"])
    after = [p for p in points if p["step"] > best["step"]]
    n = s1["max_eval_examples"]
    # runs since stop_reason was stored say it in their done.json; older ones: derived from the curve
    recorded = [json.loads(f.read_text()).get("stop_reason") for f in sorted(run.glob("stage1/*/done.json"))]
    early = len(after) >= s1["patience"] and points[-1]["step"] < s1["steps"]
    return {"points": points, "best": best, "stopped_early": early,
            "stop_reason": next((r for r in recorded if r), None) or ("patience" if early else "steps") + " (derived)",
            "patience": s1["patience"], "steps_cap": s1["steps"],
            "valid_users_per_task": n, "lr": s1["lr"], "batch_per_task": s1["batch_size"],
            "standard_error_at_best": {t: round(math.sqrt(best[t] * (1 - best[t]) / n), 4) for t in ("ta", "rps")},
            "chance": round(1 / cfg["data"]["n_candidates"], 4)}  # validation scores every candidate


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["examples"] for p in doc["points"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("ta", "Temporal Analysis"), ("rps", "Recommendation Pattern Simulating"), ("mean", "mean")):
        ax.plot(xs, [p[key] for p in doc["points"]], marker="o", label=label)
    ax.axhline(doc["chance"], color="grey", linestyle=":", label="chance")
    ax.set_xlabel("stage-1 examples (both tasks)")
    ax.set_ylabel(f"validation accuracy ({doc['valid_users_per_task']} users/task)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("run", type=Path)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--command", required=True, help="the command that made the run")
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/stage1_curve/<dataset>.json")
    args = ap.parse_args(argv)
    out = args.out or RESULTS / "stage1_curve" / f"{args.dataset}.json"
    doc = {"run": str(args.run), "run_command": args.command, **curve(args.run)}
    write_result(out, doc)
    try:
        plot(doc, out.with_suffix(".png"))
    except ImportError:
        print("plot skipped: install the [plots] extra (matplotlib)")
    print(json.dumps({"best": doc["best"], "stopped_early": doc["stopped_early"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
