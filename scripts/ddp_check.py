"""Run a preset once in one process and once under `torchrun --nproc_per_node N` (CPU, gloo) and compare.

python scripts/ddp_check.py [--config configs/demo.yaml] [--nproc 2] [--out /tmp/ddp-check]
Writes benchmarks/results/ddp_check.json. The global batch is the same in both runs (each process takes
batch_size / N rows of it), so the two differ only by floating-point reduction order.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], env: dict) -> float:
    t = time.time()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    return time.time() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--out", default="/tmp/ddp-check")
    ap.add_argument("--tolerance", type=float, default=0.03)
    ap.add_argument("--set", action="append", default=[], help="passed to both runs")
    args = ap.parse_args()
    extra = [x for s in args.set for x in ("--set", s)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    single, multi = Path(args.out, "single"), Path(args.out, f"ddp{args.nproc}")
    t1 = run([sys.executable, "-m", "delrec.cli", "run", "--config", args.config, "--out", str(single), *extra], env)
    tn = run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
              "-m", "delrec.cli", "run", "--config", args.config, "--out", str(multi), *extra], env)
    a = json.loads((single / "metrics.json").read_text())["rows"]
    b = json.loads((multi / "metrics.json").read_text())["rows"]
    losses = {}
    for name, folder in (("single", single), ("ddp", multi)):
        recs = [json.loads(x) for x in (folder / "log.jsonl").read_text().splitlines()]
        losses[name] = [r["loss"] for r in recs if r.get("stage") == "stage2/lsr-only" and "loss" in r][:10]
    loss_diff = max(abs(x - y) for x, y in zip(losses["single"], losses["ddp"]))
    diffs = {m: {k: abs(a[m][k] - b[m][k]) for k in ("hr@1", "hr@5", "ndcg@5")} for m in a if m in b}
    worst = max(v for d in diffs.values() for v in d.values())
    result = {"config": args.config, "nproc": args.nproc, "single_s": round(t1, 1), "ddp_s": round(tn, 1),
              "single": {m: {k: a[m][k] for k in ("hr@1", "hr@5", "ndcg@5")} for m in a},
              "ddp": {m: {k: b[m][k] for k in ("hr@1", "hr@5", "ndcg@5")} for m in b},
              "max_abs_diff": worst, "sets": args.set,
              "stage2_first_10_losses": losses, "stage2_first_10_losses_max_abs_diff": loss_diff, "tolerance": args.tolerance, "ok": worst <= args.tolerance}
    out = ROOT / "benchmarks/results/ddp_check.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
