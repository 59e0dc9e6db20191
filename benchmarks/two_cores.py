"""Both cores for stage 2: one process with two threads against two processes (`torchrun`, gloo) of one thread.

    python benchmarks/two_cores.py --config configs/ml-100k.yaml --data-dir $DELREC_DATA/ml-100k \
        --from-run runs/ml-100k --out benchmarks/results/two_cores.json [--steps 24]

Each arm is a real `delrec finetune` run of lsr-only for `--steps` steps of the preset's global batch (under
torchrun each process takes half of every batch), with teacher/ and candidates/ copied from `--from-run` (a
run of the same data settings) so no teacher trains; the stage ends with its test row (500 users in the
ML-100K preset), which is in `wall_s`. Rates come from the step rows of each run's log.jsonl (example passes
/ seconds of training steps, the first step left out as warm-up). The steps are all first-epoch steps: later
epochs, where the frozen lower blocks' states are reused, are not measured here. The first losses of the two
arms are reported side by side (they differ only in the order of floating-point sums). Run it on an
otherwise idle machine: both arms need both cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _arm(cmd: list[str], threads: int, out: Path, source: Path) -> dict:
    for part in ("teacher", "candidates"):
        shutil.copytree(source / part, out / part)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT / "src"))
    t = time.time()
    subprocess.run(cmd + ["--out", str(out)], check=True, env=env, cwd=ROOT)
    wall = time.time() - t
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("stage") == "stage2/lsr-only" and "grad_norm" in r]
    t_end = [r["elapsed_s"] for r in steps]
    dt = [b - a for a, b in zip([0.0] + t_end[:-1], t_end)]
    return {"wall_s": round(wall, 1), "steps": len(steps), "step_s": [round(x, 3) for x in dt],
            "losses": [r["loss"] for r in steps]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--from-run", type=Path, required=True, help="a run folder holding teacher/ and candidates/")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    from delrec.config import load_config

    sets = [f"stage2.steps={args.steps}", "stage2.warmup=1",
            f"stage2.eval_every={args.steps}", "stage2.max_eval_examples=16", "stage2.lower_states_dir=",
            "eval.methods=[lsr-only]"]
    batch = load_config(args.config, sets).stage2.batch_size
    base = ["-m", "delrec.cli", "finetune", "--config", args.config, "--data-dir", args.data_dir,
            *[x for s in sets for x in ("--set", s)]]
    with tempfile.TemporaryDirectory() as tmp:
        arms = {
            "one-process-two-threads": _arm([sys.executable, *base], 2, Path(tmp, "threads"), args.from_run),
            "torchrun-two-processes": _arm([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                            "--nproc_per_node=2", *base], 1, Path(tmp, "ddp"), args.from_run),
        }
    for arm in arms.values():
        arm["examples_per_s"] = batch * (len(arm["step_s"]) - 1) / sum(arm["step_s"][1:])
    a, b = arms["one-process-two-threads"], arms["torchrun-two-processes"]
    doc = {"command": "python benchmarks/two_cores.py " + " ".join(argv or sys.argv[1:]), "batch_size": batch,
           "arms": arms,
           "torchrun_over_threads": b["examples_per_s"] / a["examples_per_s"],
           "max_abs_loss_diff_first_10": max(abs(x - y) for x, y in zip(a["losses"][:10], b["losses"][:10]))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: doc[k] for k in ("torchrun_over_threads", "max_abs_loss_diff_first_10")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
