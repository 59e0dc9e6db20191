r"""Does distillation help? delrec against lsr-only (and the ablations against delrec) at one stage-1 budget.

    python benchmarks/tools/distillation.py --dataset ml-100k --seed 0 --stage1 400 \
        --metrics runs/ml100k-stage1-curve/metrics.json --compare 100=benchmarks/results/past_teacher/ml-100k-seed0.metrics.json

The run's metrics.json (per-example ranks of every row) is copied next to the result as
`<dataset>-seed<seed>-stage1-<steps>.metrics.json`, and the entry `datasets/<dataset>/seeds/<seed>/stage1-<steps>`
of benchmarks/results/distillation/<dataset>.json holds each row's HR@1 / NDCG@5 with its interval and the paired
differences (b - a on the same test users, 10,000 paired bootstrap draws, `[mean, low, high]`):
`delrec_minus_lsr_only`, and where the run has them `delrec-no-ta_minus_delrec`, `delrec-no-rps_minus_delrec`.
`--compare STEPS=FILE` adds `delrec_minus_delrec_at_stage1-<STEPS>`: the same seed's delrec row trained on a
soft prompt from another stage-1 budget. Entries of other seeds and budgets already in the file are kept.
"""

from __future__ import annotations

import json
from pathlib import Path

from delrec.benchmarking import RESULTS, ROOT, paired_triplets, parser, row_interval, write_result
from delrec.io import atomic_write_text

PAIRS = (("lsr-only", "delrec"), ("delrec", "delrec-no-ta"), ("delrec", "delrec-no-rps"))
ROWS = ("sasrec", "lsr-only", "delrec", "delrec-no-ta", "delrec-no-rps")


def paired(a: dict, b: dict) -> dict:
    return paired_triplets(a["ranks"], b["ranks"])


def entry(rows: dict, source: str, compare: dict[str, tuple[str, dict]]) -> dict:
    out = {"source": source, "n_test": rows["delrec"]["n"],
           "rows": {k: {m: row_interval(rows[k], m) for m in ("hr@1", "ndcg@5")} for k in ROWS if k in rows},
           "paired": {}}
    for a, b in PAIRS:
        if a in rows and b in rows:
            key = f"{b}_minus_{a}".replace("lsr-only", "lsr_only")
            out["paired"][key] = {"a": a, "b": b, "a_source": source, **paired(rows[a], rows[b])}
    for steps, (path, other) in compare.items():
        out["paired"][f"delrec_minus_delrec_at_stage1-{steps}"] = {
            "a": "delrec", "b": "delrec", "a_source": path, **paired(other["delrec"], rows["delrec"])}
    return out


def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/distillation/<dataset>.json")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--stage1", type=int, required=True, help="the stage-1 steps of the run's soft prompt")
    ap.add_argument("--metrics", type=Path, required=True, help="the run's metrics.json")
    ap.add_argument("--run-command", default="", help="the command that produced --metrics (its runs/*.cmd)")
    ap.add_argument("--compare", action="append", default=[], help="STEPS=FILE: delrec at another stage-1 budget")
    args = ap.parse_args(argv)
    out = args.out or RESULTS / "distillation" / f"{args.dataset}.json"
    stored = out.parent / f"{args.dataset}-seed{args.seed}-stage1-{args.stage1}.metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.metrics.resolve() != stored.resolve():
        run = json.loads(args.metrics.read_text())
        # stamped with what measured it: the run's own commit, machine and command
        run["provenance"] = {"commit": run["produced_by"]["git_commit"], "machine": run["run"]["machine"],
                             "command": args.run_command, "date": run["run"]["ended"]}
        atomic_write_text(stored, json.dumps(run, indent=1) + "\n")
    rows = json.loads(stored.read_text())["rows"]
    compare = {}
    for spec in args.compare:
        steps, _, path = spec.partition("=")
        compare[steps] = (path, json.loads((ROOT / path).read_text())["rows"])
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc.pop("provenance", None)
    doc.setdefault("what", __doc__.strip().split("\n\n")[0])
    seeds = doc.setdefault("datasets", {}).setdefault(args.dataset, {}).setdefault("seeds", {})
    seeds.setdefault(str(args.seed), {})[f"stage1-{args.stage1}"] = entry(rows, str(stored.relative_to(ROOT)), compare)
    write_result(out, doc)
    print(json.dumps({k: {m: v[m] for m in ("hr@1", "ndcg@5")}
                      for k, v in seeds[str(args.seed)][f"stage1-{args.stage1}"]["paired"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
