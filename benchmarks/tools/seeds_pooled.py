"""Paired differences pooled over training seeds, from the stored per-example ranks of past_teacher's entries.

    python benchmarks/tools/seeds_pooled.py --dataset ml-100k        # -> benchmarks/results/past_teacher/pooled.json

Every seed of a dataset scores the same test users in the same order (the candidate file follows `data.seed`,
not the training seed; checked here: popularity, which no training seed touches, must rank every example
the same in every seed). Per user, the difference b - a is averaged over the seeds, and the 95% interval comes
from resampling users (10,000 percentile-bootstrap draws), so a user counts once however many seeds there are.
`best_teacher` and `best_lm` are each seed's own choices on validation users (they may differ by seed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from delrec.benchmarking import RESULTS, ROOT, parser, write_result
from delrec.metrics import per_example

PAIRS = (("best_teacher", "best_lm"), ("best_teacher", "teacher-ensemble"), ("teacher-ensemble", "best_lm"))


def seed_rows(entry: dict) -> dict:
    rows: dict = {}
    for source in entry["sources"]:
        rows |= {k: v for k, v in json.loads((ROOT / source).read_text())["rows"].items() if k not in rows}
    return rows


def pooled(entries: dict, a: str, b: str, n_boot: int, seed: int = 0) -> dict:
    diffs, named = {}, {}
    for s, entry in sorted(entries.items()):
        rows = seed_rows(entry)
        name_a, name_b = entry.get(a, a), entry.get(b, b)  # "best_teacher" -> the teacher it names
        named[s] = [name_a, name_b]
        pa, pb = per_example(np.asarray(rows[name_a]["ranks"])), per_example(np.asarray(rows[name_b]["ranks"]))
        for m in ("hr@1", "ndcg@5"):
            diffs.setdefault(m, []).append(pb[m] - pa[m])
    idx = np.random.default_rng(seed).integers(0, len(diffs["hr@1"][0]), size=(n_boot, len(diffs["hr@1"][0])))
    out = {"rows_per_seed": named}
    for m, per_seed in diffs.items():
        d = np.mean(per_seed, axis=0)  # per user, over seeds
        boots = d[idx].mean(1)
        out[m] = [round(float(d.mean()), 4), round(float(np.percentile(boots, 2.5)), 4),
                  round(float(np.percentile(boots, 97.5)), 4)]
        out[f"{m}_per_seed"] = {s: round(float(x.mean()), 4) for s, x in zip(sorted(entries), per_seed)}
    return out


def main(argv=None) -> int:
    ap = parser(__doc__, out=RESULTS / "past_teacher" / "pooled.json")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--summary", type=Path, default=RESULTS / "past_teacher" / "summary.json")
    ap.add_argument("--boot", type=int, default=10000)
    args = ap.parse_args(argv)
    entries = json.loads(args.summary.read_text())["datasets"][args.dataset]["seeds"]
    if len(entries) < 2:
        raise SystemExit(f"{args.summary}: {args.dataset} has {len(entries)} seed(s); pooling needs two or more")
    popularity = {s: seed_rows(e)["popularity"]["ranks"] for s, e in entries.items()}
    if len({json.dumps(r) for r in popularity.values()}) != 1:
        raise SystemExit(f"{args.dataset}: popularity ranks differ between seeds, so the seeds did not score the "
                         "same test examples in the same order; they cannot be paired")
    doc = {"dataset": args.dataset, "seeds": sorted(entries), "n_users": len(next(iter(popularity.values()))),
           "pairs": {f"{b} - {a}": pooled(entries, a, b, args.boot) for a, b in PAIRS}}
    write_result(args.out, doc)
    print(json.dumps({k: {m: v[m] for m in ("hr@1", "ndcg@5")} for k, v in doc["pairs"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
