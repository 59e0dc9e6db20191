"""Test scores [N, C] of a run's popularity row or one of its teachers, for benchmarks/tools/paired_diff.py.

    python benchmarks/tools/baseline_scores.py RUN --model popularity --out RUN/popularity_test_scores.npy

Rebuilds the run's split and reads its own test candidate file (the order the LM rows' test_scores.npy use);
popularity is recounted from the training split, a teacher is loaded from RUN/teacher/<model>. The metrics
of the saved scores are printed next to the run's metrics.json row as a check that they are the same.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from delrec.benchmarking import parser


def main(argv=None) -> int:
    # the scores are an array for paired_diff.py, not a result: .npy, no provenance stamp
    ap = parser(__doc__, out="", out_help="the .npy file of [N, C] test scores")
    ap.add_argument("run", type=Path)
    ap.add_argument("--model", required=True, help="popularity or a teacher name (sasrec, gru4rec, caser)")
    args = ap.parse_args(argv)
    from delrec.config import load_config
    from delrec.data.candidates import read_candidates
    from delrec.data.registry import load_dataset
    from delrec.lm_rows import build_split
    from delrec.metrics import per_example, ranks_from_scores
    from delrec.runs import RunDir
    from delrec.teachers.evaluation import candidate_scores
    from delrec.teachers.teacher import Teacher
    from delrec.teachers.train import train_teacher

    cfg = load_config(str(args.run / "config.yaml"))
    run, dataset = RunDir(args.run), load_dataset(cfg.data)
    sets = read_candidates(run.path("candidates", f"test-{run.data_key(cfg)}.jsonl"), dataset)
    if args.model == "popularity":
        model = train_teacher("popularity", cfg.teacher, dataset, build_split(cfg, dataset), seed=cfg.seed,
                              progress=False)
    else:
        model = Teacher.load(run.teacher_dir(cfg, args.model))
    scores = candidate_scores(model, sets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as f:
        np.save(f, scores.astype(np.float32), allow_pickle=False)
    per = per_example(ranks_from_scores(scores, [c.target_index for c in sets]))
    row = json.loads((args.run / "metrics.json").read_text())["rows"].get(args.model, {})
    print(json.dumps({m: [float(per[m].mean()), row.get(m)] for m in ("hr@1", "hr@5", "ndcg@5")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
