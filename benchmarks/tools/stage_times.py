"""What each part of a `delrec run` cost, from the `time` of its log.jsonl records.

    python benchmarks/tools/stage_times.py runs/ml-100k [runs/other ...] [--out stage_times.json]

The time between two consecutive records goes to the part the later record belongs to: a training stage's
steps and validations to its stage name (`stage2/lsr-only`), a method's test pass to "<method> test" (its
`test` record is written after the pass), a teacher's training to `teacher/<model>`. A resumed run's parts
add up over its attempts; the gap between two attempts is left out (the part after a `run_start`).
The sums are `delrec.benchmarking.stage_times`, which the speed benchmarks use too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from delrec import DelrecError
from delrec.benchmarking import command, parser, stage_times, write_result


def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (or log.jsonl files)")
    # optional: without it the times are only printed (parser's --out always has a default or is required)
    ap.add_argument("--out", type=Path, help="also write them here as JSON (stamped with their provenance)")
    args = ap.parse_args(argv)
    try:
        doc = {str(r): stage_times(r / "log.jsonl" if r.is_dir() else r) for r in args.runs}
    except DelrecError as err:  # a log from before records carried a time: one line, not a traceback
        sys.exit(str(err))
    print(json.dumps(doc, indent=1))
    if args.out:
        write_result(args.out, doc, cmd=command(None if argv is None else [__file__, *argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
