"""Past the teacher (issue 24): does an LM-based row beat the best teacher? From the metrics.json of one or more
runs of one training seed on the same candidate file (per-example ranks and fusion choices stored in them),
written into benchmarks/results/past_teacher/summary.json under its dataset and seed; other entries are kept.

    python benchmarks/tools/past_teacher.py --dataset ml-100k --seed 0 \
        --metrics benchmarks/results/past_teacher/ml-100k-seed0.metrics.json --command "the run's command"

Several files (e.g. a run that adds delrec+hint on the first run's teachers and candidates) are merged by row
name; a row in two files must have the same per-example ranks there (the teachers do), else they were not
scored on the same test file and the script stops.

Both sides are chosen on validation users, never on the test file: the best teacher is the one whose scores
alone (w = 0 of the fusion grid) have the best validation NDCG@5; the best LM-based row is the one with the
best validation NDCG@5 among the fusion rows whose chosen w is above 0 (at w = 0 a row is its teachers alone)
and the plain LM rows (their unfused scores).
Differences are paired over the same test users (10,000 resamples), as [mean, low, high].
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from delrec.benchmarking import (
    RESULTS,
    ROOT,
    command,
    paired_triplets,
    parser,
    row_interval,
    validation_choices,
    write_result,
)


def summary(rows: dict, n_boot: int) -> dict:
    teachers, lm_rows = validation_choices(rows)
    best_teacher = max(teachers, key=teachers.get)
    best_lm = max(lm_rows, key=lm_rows.get)

    def diff(a: str, b: str) -> dict:
        return paired_triplets(rows[a]["ranks"], rows[b]["ranks"], n_boot=n_boot)

    out = {"n_test": rows[best_teacher]["n"],
           "rows": {name: {"hr@1": row_interval(r, "hr@1"), "ndcg@5": row_interval(r, "ndcg@5")}
                    | ({k: r["fusion"][k] for k in ("teacher", "w", "second_teacher", "w_second", "lm")}
                       if "fusion" in r else {})
                    for name, r in rows.items()},
           "valid_ndcg@5": {"teachers": teachers, "lm_based": lm_rows},
           "best_teacher": best_teacher, "best_lm": best_lm}
    pairs = {"best_lm_minus_best_teacher": (best_teacher, best_lm)}
    if "teacher-ensemble" in rows:
        pairs |= {"teacher_ensemble_minus_best_teacher": (best_teacher, "teacher-ensemble"),
                  "best_lm_minus_teacher_ensemble": ("teacher-ensemble", best_lm)}
    if {"delrec", "lsr-only"} <= set(rows):
        pairs["delrec_minus_lsr_only"] = ("lsr-only", "delrec")
    for key, (a, b) in pairs.items():
        for metric, value in diff(a, b).items():
            out[f"{key}_{metric}"] = value
    # Every other comparison the README cites, each named by its two rows: the LM rows against popularity and
    # the best teacher, and each fused row against the teacher it was fused with (does the LM add to it?).
    from delrec.methods import METHODS

    cited = [("popularity", m) for m in lm_rows if METHODS[m].kind == "lm"]
    cited += [(best_teacher, m) for m in lm_rows if m != best_lm]
    cited += [(rows[m]["fusion"]["teacher"], m) for m in lm_rows if "fusion" in rows[m]]
    out["paired"] = {f"{b} - {a}": {"a": a, "b": b} | diff(a, b) for a, b in dict.fromkeys(cited)}
    return out


def merged_rows(paths: list[Path]) -> dict:
    rows: dict = {}
    for path in paths:
        for name, row in json.loads(path.read_text())["rows"].items():
            if name in rows and rows[name]["ranks"] != row["ranks"]:
                sys.exit(f"past_teacher: {path}: row {name!r} has other per-example ranks than in an earlier "
                         "file; the runs were not scored on the same test file")
            rows.setdefault(name, row)
    return rows


def main(argv=None) -> int:
    ap = parser(__doc__, out=RESULTS / "past_teacher" / "summary.json",
                out_help="the summary; its other datasets and seeds are kept")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--seed", type=int, required=True, help="the run's training seed")
    ap.add_argument("--metrics", type=Path, nargs="+", required=True,
                    help="the metrics.json of the seed's runs, committed under results/")
    ap.add_argument("--command", action="append", required=True,
                    help="the command that produced each run, in the order of --metrics (repeat it)")
    ap.add_argument("--boot", type=int, default=10000)
    args = ap.parse_args(argv)
    from delrec.runs import git_commit

    if len(args.command) != len(args.metrics):
        sys.exit(f"past_teacher: {len(args.metrics)} metrics files but {len(args.command)} --command")
    first = json.loads(args.metrics[0].read_text())
    doc = json.loads(args.out.read_text()) if args.out.exists() else {"what": __doc__.split("\n\n")[0]}
    cmd = command(None if argv is None else [__file__, *argv])
    # The file's stamp names only its latest write: each entry keeps the commit and command that made it.
    # (No machine: the paired bootstrap is seeded, its numbers do not depend on where it ran.)
    entry = summary(merged_rows(args.metrics), args.boot) | {
        "sources": [m.resolve().relative_to(ROOT).as_posix() if m.resolve().is_relative_to(ROOT) else str(m)
                    for m in args.metrics],
        "commands": args.command, "run": first.get("run"), "produced_by": first.get("produced_by"),
        "summarised": {"commit": git_commit(), "command": cmd, "date": time.strftime("%Y-%m-%d")}}
    doc.setdefault("datasets", {}).setdefault(args.dataset, {}).setdefault("seeds", {})[str(args.seed)] = entry
    write_result(args.out, doc, cmd=cmd)
    keys = [k for k in entry if k.endswith(("_hr@1", "_ndcg@5"))]
    print(json.dumps({"best_teacher": entry["best_teacher"], "best_lm": entry["best_lm"]} | {k: entry[k] for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
