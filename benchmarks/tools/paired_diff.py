"""Paired bootstrap of the difference between two methods scored on the same test file.

    python benchmarks/tools/paired_diff.py RUN/metrics.json:lsr-only RUN/metrics.json:delrec --out OUT.json
    python benchmarks/tools/paired_diff.py A_test_scores.npy B_test_scores.npy --candidates RUN/candidates/test-*.jsonl \
        --out OUT.json

An argument `FILE.json:METHOD` reads that row's per-example ranks from a metrics file (a run's metrics.json or
a committed results file: every row written since ranks were stored carries them); a `.npy` file holds [N, C]
scores in the candidate file's order and needs --candidates. The same resampled users are used for both
methods, so the interval is that of the difference, not of each row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def ranks_of(arg: str, candidates: Path | None) -> np.ndarray:
    from delrec.metrics import ranks_from_scores

    if arg.endswith(".npy"):
        if candidates is None:
            sys.exit(f"paired_diff: {arg} holds scores; give the candidate file they are for with --candidates")
        rows = [json.loads(x) for x in candidates.read_text().splitlines() if x.strip()]
        labels = [r["candidates"].index(r["target"]) for r in rows]
        return ranks_from_scores(np.load(arg, allow_pickle=False), labels)
    path, _, method = arg.rpartition(":")
    if not path or not method:
        sys.exit(f"paired_diff: {arg!r} is neither a .npy score file nor FILE.json:METHOD")
    rows = json.loads(Path(path).read_text())["rows"]
    if method not in rows:
        sys.exit(f"paired_diff: {path} has no row {method!r}; rows: {', '.join(rows)}")
    if "ranks" not in rows[method]:
        sys.exit(f"paired_diff: {path}: row {method!r} stores no per-example ranks (written before they were)")
    return np.asarray(rows[method]["ranks"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", help="FILE.json:METHOD or scores .npy")
    ap.add_argument("b", help="FILE.json:METHOD or scores .npy")
    ap.add_argument("--candidates", type=Path, help="the candidate file of .npy score files")
    ap.add_argument("--boot", type=int, default=10000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    from delrec.metrics import paired_difference

    a, b = ranks_of(args.a, args.candidates), ranks_of(args.b, args.candidates)
    out = {"a": args.a, "b": args.b, "n": len(a), "metrics": paired_difference(a, b, n_boot=args.boot)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["metrics"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
