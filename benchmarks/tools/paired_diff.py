"""Paired bootstrap of the difference between two methods scored on the same test file.

    python benchmarks/tools/paired_diff.py runs/ml-100k-b2k/metrics.json:lsr-only \
        runs/ml-100k-b2k/metrics.json:delrec \
        --out benchmarks/results/budget_curve/ml-100k-b2k-delrec-vs-lsr-only.json
    python benchmarks/tools/paired_diff.py A_test_scores.npy B_test_scores.npy --candidates RUN/candidates/test-*.jsonl \
        --out benchmarks/results/<question>/<dataset>-<b>-vs-<a>.json

An argument `FILE.json:METHOD` reads that row's per-example ranks from a metrics file (a run's metrics.json or
a committed results file: every row written since ranks were stored carries them); a `.npy` file holds [N, C]
scores in the candidate file's order and needs --candidates. The same resampled users are used for both
methods, so the interval is that of the difference b - a, not of each row; results are named
`<dataset>-<b>-vs-<a>.json` in their question's folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from delrec.benchmarking import command, parser, write_result


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
    ap = parser(__doc__, out="",
                out_help="the result, benchmarks/results/<question>/<dataset>-<b>-vs-<a>.json")
    ap.add_argument("a", help="FILE.json:METHOD or scores .npy")
    ap.add_argument("b", help="FILE.json:METHOD or scores .npy")
    ap.add_argument("--candidates", type=Path, help="the candidate file of .npy score files")
    ap.add_argument("--boot", type=int, default=10000)
    args = ap.parse_args(argv)
    from delrec.metrics import paired_difference

    a, b = ranks_of(args.a, args.candidates), ranks_of(args.b, args.candidates)
    out = {"a": args.a, "b": args.b, "n": len(a), "metrics": paired_difference(a, b, n_boot=args.boot)}
    write_result(args.out, out, cmd=command(None if argv is None else [__file__, *argv]))
    print(json.dumps(out["metrics"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
