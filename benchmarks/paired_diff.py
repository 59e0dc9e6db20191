"""Paired bootstrap of the difference between two methods scored on the same test file.

    python benchmarks/paired_diff.py RUN_A/stage2/lsr-only-*/test_scores.npy RUN_B/stage2/delrec-*/test_scores.npy \
        --candidates RUN_A/candidates/test-*.jsonl --out benchmarks/results/ml-100k/budget/b2k_delrec_vs_lsr-only.json

Both score files hold [N, C] scores for the same N examples in the candidate file's order; the same resampled
users are used for both methods, so the interval is that of the difference, not of each row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--candidates", type=Path, required=True)
    ap.add_argument("--boot", type=int, default=10000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    from delrec.metrics import per_example, ranks_from_scores

    rows = [json.loads(x) for x in args.candidates.read_text().splitlines() if x.strip()]
    labels = [r["candidates"].index(r["target"]) for r in rows]
    per = [per_example(ranks_from_scores(np.load(p, allow_pickle=False), labels)) for p in (args.a, args.b)]
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(labels), size=(args.boot, len(labels)))
    out = {"a": str(args.a), "b": str(args.b), "n": len(labels), "metrics": {}}
    for m in ("hr@1", "hr@5", "ndcg@5"):
        d = per[1][m] - per[0][m]
        boots = d[idx].mean(1)
        out["metrics"][m] = {"a": float(per[0][m].mean()), "b": float(per[1][m].mean()), "b_minus_a": float(d.mean()),
                             "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["metrics"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
