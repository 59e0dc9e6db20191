r"""A shipped preset's run, end to end: its table with intervals, the paired differences a reader asks for, and
what it cost, from the run's own metrics.json (per-example ranks, the run's `run` block of times).

    python benchmarks/tools/preset_run.py --dataset beauty --metrics runs/beauty-preset/metrics.json \
        --run-command "$(cat runs/beauty-preset.cmd)"

Writes `benchmarks/results/<dataset>/preset-seed<seed>.metrics.json` (the run's metrics, stamped with the run's
own commit, machine and command) and `benchmarks/results/<dataset>/preset.json` + `.md`: every row's HR@1 and
NDCG@5 as `[mean, low, high]` (95% bootstrap over test users) and HR@5; paired differences on the same test
users (10,000 draws, `[mean, low, high]`): `delrec_minus_lsr_only`, `lsr_only_minus_popularity`,
`delrec_minus_<teacher>` for the distilled teacher (teacher.models[0]) and, where fusion rows exist,
`<row>_minus_<teacher>` for the LM-based row and the teacher that validation ranks best (past_teacher.py's
choice); and the wall time, per part, with the number of processes and whether the run was resumed (a resumed
run's seconds are not one uninterrupted timing, and the file says so).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from delrec.benchmarking import (
    RESULTS,
    ROOT,
    paired_triplets,
    parser,
    row_interval,
    validation_choices,
    write_result,
)
from delrec.io import atomic_write_text


def hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


def best_on_validation(rows: dict) -> tuple[str | None, str | None]:
    """(teacher, LM-based row) with the best validation NDCG@5, from the fusion choices; (None, None) without."""
    if not any("fusion" in r for r in rows.values()):
        return None, None
    teachers, lm_rows = validation_choices(rows)
    best = lambda d: max(d, key=d.get) if d else None
    return best(teachers), best(lm_rows)


def summary(rows: dict, distilled: str) -> dict:
    out = {"rows": {k: {"hr@1": row_interval(r, "hr@1"), "hr@5": round(r["hr@5"], 4),
                        "ndcg@5": row_interval(r, "ndcg@5")} for k, r in rows.items()}, "paired": {}}
    pairs = [("lsr-only", "delrec"), ("popularity", "lsr-only"), (distilled, "delrec")]
    teacher, lm = best_on_validation(rows)
    out["best_on_validation"] = {"teacher": teacher, "lm_row": lm}
    if teacher and lm:
        pairs.append((teacher, lm))
    for a, b in pairs:
        if a in rows and b in rows:
            out["paired"][f"{b}_minus_{a}".replace("-", "_")] = {"a": a, "b": b,
                                                                 **paired_triplets(rows[a]["ranks"], rows[b]["ranks"])}
    return out


def markdown(dataset: str, doc: dict) -> str:
    t = doc["time"]
    lines = [f"# {dataset}: the preset end to end, seed {doc['seed']}, {doc['n_test']} test users", "",
             f"Wall time {hms(t['elapsed_s'])} ({t['processes']} process(es) x {t['threads_per_process']} "
             f"thread(s){'; resumed, so not one uninterrupted timing' if t['resumed'] else ''}): "
             + ", ".join(f"{k} {hms(v)}" for k, v in t["part_seconds"].items()), "",
             "| method | HR@1 [95% CI] | HR@5 | NDCG@5 [95% CI] |", "|---|---|---|---|"]
    f = lambda v: f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"
    for name, r in doc["rows"].items():
        lines.append(f"| {name} | {f(r['hr@1'])} | {r['hr@5']:.3f} | {f(r['ndcg@5'])} |")
    lines += ["", "Paired on the same test users (b - a, 10,000 bootstrap draws):", ""]
    for name, p in doc["paired"].items():
        lines.append(f"- {p['b']} - {p['a']}: HR@1 {p['hr@1'][0]:+.3f} [{p['hr@1'][1]:+.3f}, {p['hr@1'][2]:+.3f}], "
                     f"NDCG@5 {p['ndcg@5'][0]:+.3f} [{p['ndcg@5'][1]:+.3f}, {p['ndcg@5'][2]:+.3f}]")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--metrics", type=Path, required=True, help="the run's metrics.json")
    ap.add_argument("--run-command", default="", help="the command that produced --metrics (its runs/*.cmd)")
    ap.add_argument("--distilled", default="", help="the distilled teacher (default: the run config's first)")
    args = ap.parse_args(argv)
    run = json.loads(args.metrics.read_text())
    cfg_path = args.metrics.parent / "config.yaml"
    seed, distilled = 0, args.distilled
    if cfg_path.exists():
        import yaml

        cfg = yaml.safe_load(cfg_path.read_text())
        seed, distilled = cfg.get("seed", 0), distilled or cfg["teacher"]["models"][0]
    out_dir = RESULTS / args.dataset
    stored = out_dir / f"preset-seed{seed}.metrics.json"
    if args.metrics.resolve() != stored.resolve():
        run["provenance"] = {"commit": run["produced_by"]["git_commit"], "machine": run["run"]["machine"],
                             "command": args.run_command, "date": run["run"]["ended"]}
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(stored, json.dumps(run, indent=1) + "\n")
    rows = json.loads(stored.read_text())["rows"]
    r = run["run"]
    doc = {"what": __doc__.strip().split("\n\n")[0], "dataset": args.dataset, "seed": seed,
           "source": str(stored.relative_to(ROOT)), "command": args.run_command,
           "n_test": rows[distilled]["n"] if distilled in rows else None, **summary(rows, distilled or "sasrec"),
           "time": {k: r[k] for k in ("started", "ended", "elapsed_s", "resumed", "processes", "threads_per_process",
                                       "part_seconds")}}
    write_result(out_dir / "preset.json", doc, markdown=markdown(args.dataset, doc))
    print(markdown(args.dataset, doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
