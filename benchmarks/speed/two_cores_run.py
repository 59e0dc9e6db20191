r"""Both cores for a whole `delrec run`: one process with two threads against `torchrun --nproc_per_node 2`.

    python benchmarks/speed/two_cores_run.py --config configs/ml-100k.yaml --data-dir $DELREC_DATA/ml-100k \
        --out benchmarks/results/two_cores/whole-run.json [--set stage2.steps=120 ...]

Each arm runs the same config from an empty run folder (teachers, zero-shot test, stage 1, both stage-2
methods, every test pass), one after the other on an otherwise idle machine; `--set` shrinks the budget so the
pair fits in a session. The parts' seconds come from the run logs (delrec.benchmarking.stage_times, what
benchmarks/tools/stage_times.py prints), so a per-part ratio can be applied to the parts of a full-budget run
timed the other way. The test rows of both arms are kept: the two runs differ in float summation order and in
LoRA dropout masks (drawn per process), so their trained rows are two training runs, not one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from delrec.benchmarking import RESULTS, ROOT, parser, stage_times, write_result


def _arm(launcher: list[str], threads: int, base: list[str], out: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT / "src"))
    t = time.time()
    subprocess.run([sys.executable, *launcher, "-m", "delrec.cli", "run", *base, "--out", str(out)], check=True,
                   env=env, cwd=ROOT)
    wall = time.time() - t
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    return {"wall_s": round(wall, 1), **stage_times(out / "log.jsonl"),
            "test": {m: {k: r.get(k) for k in ("hr@1", "hr@5", "ndcg@5")} for m, r in rows.items()}}


def main(argv=None) -> int:
    ap = parser(__doc__, run_config=True, out=RESULTS / "two_cores" / "whole-run.json")
    ap.add_argument("--set", action="append", default=[], help="config override for both arms")
    ap.add_argument("--keep", type=Path, help="keep both run folders under this folder")
    args = ap.parse_args(argv)
    base = ["--config", args.config, "--data-dir", args.data_dir, *[x for s in args.set for x in ("--set", s)]]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        arms = {"one-process-two-threads": _arm([], 2, base, root / "threads"),
                "torchrun-two-processes": _arm(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
                                               1, base, root / "ddp")}
    a, b = (arms[k]["parts_s"] for k in arms)
    doc = {"arms": arms,
           "threads_over_torchrun_time": {k: round(a[k] / b[k], 3) for k in a if b.get(k)},
           "wall_ratio": arms["one-process-two-threads"]["wall_s"] / arms["torchrun-two-processes"]["wall_s"]}
    write_result(args.out, doc)
    print(json.dumps({k: doc[k] for k in ("threads_over_torchrun_time", "wall_ratio")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
