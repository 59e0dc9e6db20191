"""Both cores for stage 2: one process with two threads against two processes (`torchrun`, gloo) of one thread.

    python benchmarks/two_cores.py --config configs/ml-100k.yaml --data-dir $DELREC_DATA/ml-100k \
        --out benchmarks/results/two_cores.json [--steps 36 --train-examples 96] [--from-run runs/ml-100k]

Each arm is a real `delrec finetune` run of lsr-only for `--steps` steps of the preset's global batch (under
torchrun each process takes half of every batch), with teacher/ and candidates/ copied from `--from-run` (a
run of the same data settings) or, without it, from a `delrec teach` run of SASRec alone made first, so no
teacher trains inside an arm. With `--train-examples N` (data.max_train_examples) the training set is small
enough for several epochs: the first epoch pays the frozen lower blocks' pass, later epochs reuse its states
(under torchrun after the processes have pooled them, lm/layer_cache.py `share_across_processes`), and the
rates of both are reported. The stage ends with its test row (`--eval-users` users), which is in `wall_s`.
Rates come from the step rows of each run's log.jsonl (example passes / seconds of training steps, the first
step left out as warm-up). The first losses of the two arms are reported side by side (they differ only in
the order of floating-point sums). Run it on an otherwise idle machine: both arms need both cores.
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


def _rates(dt: list[float], per_epoch: int, batch: int) -> dict:
    first, later = dt[1:per_epoch], dt[per_epoch:]  # step 0 is warm-up
    rate = lambda x: batch * len(x) / sum(x) if x else None
    return {"examples_per_s": rate(dt[1:]), "first_epoch_examples_per_s": rate(first),
            "later_epochs_examples_per_s": rate(later)}


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
            "losses": [r["loss"] for r in steps],
            "lower_states_shared": [r for r in rows if r.get("event") == "lower_states_shared"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--from-run", type=Path, help="a run folder holding teacher/ and candidates/")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--train-examples", type=int, default=-1,
                    help="data.max_train_examples for the arms (0 = all); default: the config's")
    ap.add_argument("--eval-users", type=int, default=0, help="data.max_eval_examples; 0 = the config's")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    from delrec.config import load_config
    from delrec.pipeline import prepare

    data = ([f"data.max_train_examples={args.train_examples}"] if args.train_examples >= 0 else []) + \
        ([f"data.max_eval_examples={args.eval_users}"] if args.eval_users else [])
    sets = [f"stage2.steps={args.steps}", "stage2.warmup=1",
            f"stage2.eval_every={args.steps}", "stage2.max_eval_examples=16", "stage2.lower_states_dir=",
            "eval.methods=[lsr-only]", *data] + ([] if args.from_run else ["teacher.models=[sasrec]"])
    base = ["-m", "delrec.cli", "finetune", "--config", args.config, "--data-dir", args.data_dir,
            *[x for s in sets for x in ("--set", s)]]
    with tempfile.TemporaryDirectory() as tmp:
        source = args.from_run
        if source is None:  # the teacher and candidate files every arm copies
            source = Path(tmp, "teach")
            env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
            subprocess.run([sys.executable, "-m", "delrec.cli", "teach", "--config", args.config, "--data-dir",
                            args.data_dir, "--out", str(source), *[x for s in sets for x in ("--set", s)]],
                           check=True, env=env, cwd=ROOT)
        arms = {
            "one-process-two-threads": _arm([sys.executable, *base], 2, Path(tmp, "threads"), source),
            "torchrun-two-processes": _arm([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                            "--nproc_per_node=2", *base], 1, Path(tmp, "ddp"), source),
        }
        # read back from an arm's own folder (prepare writes config.yaml where it looks: not into --from-run)
        cfg = load_config(args.config, sets + [f"data.data_dir={args.data_dir}", f"out={Path(tmp, 'threads')}"])
        batch, n_train = cfg.stage2.batch_size, len(prepare(cfg).cands["train"])
    per_epoch = -(-n_train // batch)
    for arm in arms.values():
        arm |= _rates(arm["step_s"], per_epoch, batch)
    a, b = arms["one-process-two-threads"], arms["torchrun-two-processes"]
    doc = {"command": "python benchmarks/two_cores.py " + " ".join(argv or sys.argv[1:]), "batch_size": batch,
           "train_examples": n_train, "steps_per_epoch": per_epoch, "arms": arms,
           "torchrun_over_threads": b["examples_per_s"] / a["examples_per_s"],
           "torchrun_over_threads_later_epochs": (b["later_epochs_examples_per_s"] / a["later_epochs_examples_per_s"]
                                                   if a["later_epochs_examples_per_s"] else None),
           "max_abs_loss_diff_first_10": max(abs(x - y) for x, y in zip(a["losses"][:10], b["losses"][:10]))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: doc[k] for k in ("torchrun_over_threads", "torchrun_over_threads_later_epochs",
                                          "max_abs_loss_diff_first_10")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
