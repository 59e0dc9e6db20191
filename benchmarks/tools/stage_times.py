"""What each part of a `delrec run` cost, from the `time` of its log.jsonl records.

    python benchmarks/tools/stage_times.py runs/ml-100k [runs/other ...] [--out stage_times.json]

The time between two consecutive records goes to the part the later record belongs to: a training stage's
steps and validations to its stage name (`stage2/lsr-only`), a method's test pass to "<method> test" (its
`test` record is written after the pass), a teacher's training to `teacher/<model>`. A resumed run's parts
add up over its attempts; the gap between two attempts is left out (the part after a `run_start`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path


def part_of(rec: dict) -> str:
    if rec.get("event") == "test":
        return f"{rec.get('stage')} test"
    return str(rec.get("stage", "?"))


def stage_times(log_path: Path) -> dict:
    rows = [json.loads(x) for x in Path(log_path).read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "time" in r]
    if not rows:
        raise SystemExit(f"{log_path}: no record carries a `time` (written before delrec logged it)")
    parts: dict[str, float] = {}
    for prev, rec in itertools.pairwise(rows):
        if rec.get("event") == "run_start":
            continue  # the gap before a new attempt (--resume) belongs to nothing
        parts[part_of(rec)] = parts.get(part_of(rec), 0.0) + rec["time"] - prev["time"]
    return {"parts_s": {k: round(v, 1) for k, v in parts.items()}, "total_s": round(sum(parts.values()), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (or log.jsonl files)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    doc = {str(r): stage_times(r / "log.jsonl" if r.is_dir() else r) for r in args.runs}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
