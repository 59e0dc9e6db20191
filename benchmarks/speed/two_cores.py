r"""Both cores for a stage: one process with two threads against two processes (`torchrun`, gloo) of one thread.

    python benchmarks/speed/two_cores.py --config configs/ml-100k.yaml --data-dir $DELREC_DATA/ml-100k \
        --out benchmarks/results/two_cores/stage2.json [--steps 36 --train-examples 96] [--from-run runs/ml-100k]
    python benchmarks/speed/two_cores.py --stage 1 --baseline-set stage1.train_negatives=0 --steps 100 \
        --eval-every 25 --valid-users 64 ...            # -> benchmarks/results/two_cores/stage1.json

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

`--stage 1` times `delrec distill` (stage 1 of delrec) instead. `--baseline-set KEY=VALUE` (repeatable) adds a
third arm, one process with two threads and those settings (for stage 1, `stage1.train_negatives=0` is the
pass before the cost levers), and reports both arms' rates over it, in this script's own result
(`<arm>_over_baseline`). With `--eval-every`, every arm validates on `--valid-users` users along the way (the
curves are reported; a step that follows a validation is left out of the rates).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from delrec.benchmarking import RESULTS, ROOT, parser, write_result


def _rates(dt: list[float], timed: list[bool], per_epoch: int | None, batch: int) -> dict:
    """Example passes per second of the timed steps (step 0 is warm-up); by epoch where `per_epoch` is given."""
    def rate(lo: int, hi: int | None = None):
        x = [t for t, ok in zip(dt[lo:hi], timed[lo:hi]) if ok]
        return batch * len(x) / sum(x) if x else None

    if per_epoch is None:
        return {"examples_per_s": rate(1)}
    return {"examples_per_s": rate(1), "first_epoch_examples_per_s": rate(1, per_epoch),
            "later_epochs_examples_per_s": rate(per_epoch)}


def _arm(cmd: list[str], threads: int, out: Path, source: Path, stage: str) -> dict:
    for part in ("teacher", "candidates"):
        shutil.copytree(source / part, out / part)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT / "src"))
    t = time.time()
    subprocess.run(cmd + ["--out", str(out)], check=True, env=env, cwd=ROOT)
    wall = time.time() - t
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("stage") == stage and "grad_norm" in r]
    t_end = [r["elapsed_s"] for r in steps]
    dt = [b - a for a, b in zip([0.0] + t_end[:-1], t_end)]
    evals = [r for r in rows if r.get("stage") == stage and r.get("event") in ("eval", "eval_tasks")]
    after_eval = {r["step"] + 1 for r in evals}  # their wall time includes a validation
    loss = [r.get("loss", sum(v for k, v in r.items() if k.startswith("loss_"))) for r in steps]
    return {"wall_s": round(wall, 1), "steps": len(steps), "step_s": [round(x, 3) for x in dt],
            "timed_steps": [r["step"] not in after_eval for r in steps], "losses": loss,
            "valid": [{k: v for k, v in r.items() if k == "step" or k.startswith("valid")} for r in evals],
            "lower_states_shared": [r for r in rows if r.get("event") == "lower_states_shared"]}


def main(argv=None) -> int:
    ap = parser(__doc__, run_config=True, out=RESULTS / "two_cores" / "stage2.json",
                out_help="the result JSON (default: benchmarks/results/two_cores/stage<--stage>.json)")
    ap.set_defaults(out=None)  # the default follows --stage, below
    ap.add_argument("--from-run", type=Path, help="a run folder holding teacher/ and candidates/")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--train-examples", type=int, default=-1,
                    help="data.max_train_examples for the arms (0 = all); default: the config's")
    ap.add_argument("--eval-users", type=int, default=0, help="data.max_eval_examples; 0 = the config's")
    ap.add_argument("--stage", type=int, choices=(1, 2), default=2)
    ap.add_argument("--eval-every", type=int, default=0, help="validate every N steps; 0: once, at the end")
    ap.add_argument("--valid-users", type=int, default=16, help="validation users of the stage")
    ap.add_argument("--baseline-set", action="append", default=[], metavar="KEY=VALUE",
                    help="add a one-process two-thread arm with these settings (repeatable)")
    args = ap.parse_args(argv)
    args.out = args.out or RESULTS / "two_cores" / f"stage{args.stage}.json"
    from delrec.config import load_config
    from delrec.pipeline import prepare

    st = f"stage{args.stage}"
    data = ([f"data.max_train_examples={args.train_examples}"] if args.train_examples >= 0 else []) + \
        ([f"data.max_eval_examples={args.eval_users}"] if args.eval_users else [])
    sets = [f"{st}.steps={args.steps}", f"{st}.warmup=1", f"{st}.eval_every={args.eval_every or args.steps}",
            f"{st}.max_eval_examples={args.valid_users}", f"{st}.patience=1000", "stage2.lower_states_dir=",
            "eval.methods=[lsr-only]" if args.stage == 2 else "eval.methods=[delrec]", *data] + \
        ([] if args.from_run else ["teacher.models=[sasrec]"])
    base = ["-m", "delrec.cli", "finetune" if args.stage == 2 else "distill", "--config", args.config,
            "--data-dir", args.data_dir, *[x for s in sets for x in ("--set", s)]]
    log_stage = "stage2/lsr-only" if args.stage == 2 else "stage1/delrec"
    with tempfile.TemporaryDirectory() as tmp:
        source = args.from_run
        if source is None:  # the teacher and candidate files every arm copies
            source = Path(tmp, "teach")
            env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
            subprocess.run([sys.executable, "-m", "delrec.cli", "teach", "--config", args.config, "--data-dir",
                            args.data_dir, "--out", str(source), *[x for s in sets for x in ("--set", s)]],
                           check=True, env=env, cwd=ROOT)
        arms = {}
        if args.baseline_set:
            extra = [x for s in args.baseline_set for x in ("--set", s)]
            arms["baseline"] = _arm([sys.executable, *base, *extra], 2, Path(tmp, "baseline"), source, log_stage)
        arms |= {
            "one-process-two-threads": _arm([sys.executable, *base], 2, Path(tmp, "threads"), source, log_stage),
            "torchrun-two-processes": _arm([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                            "--nproc_per_node=2", *base], 1, Path(tmp, "ddp"), source, log_stage),
        }
        # read back from an arm's own folder (prepare writes config.yaml where it looks: not into --from-run)
        cfg = load_config(args.config, sets + [f"data.data_dir={args.data_dir}", f"out={Path(tmp, 'threads')}"])
        if args.stage == 2:
            batch, n_train = cfg.stage2.batch_size, len(prepare(cfg).cands["train"])
        else:  # one batch per task per step; no epochs to tell apart
            batch, n_train = 2 * cfg.stage1.batch_size, None
    per_epoch = -(-n_train // batch) if args.stage == 2 else None
    for arm in arms.values():
        arm |= _rates(arm["step_s"], arm["timed_steps"], per_epoch, batch)
    a, b = arms["one-process-two-threads"], arms["torchrun-two-processes"]
    doc = {"stage": args.stage, "batch_size": batch, "train_examples": n_train, "steps_per_epoch": per_epoch,
           "arms": arms,
           "torchrun_over_threads": b["examples_per_s"] / a["examples_per_s"],
           "torchrun_over_threads_later_epochs": (b["later_epochs_examples_per_s"] / a["later_epochs_examples_per_s"]
                                                   if a.get("later_epochs_examples_per_s") else None),
           "max_abs_loss_diff_first_10": max(abs(x - y) for x, y in zip(a["losses"][:10], b["losses"][:10]))}
    if "baseline" in arms:
        doc["baseline_set"] = args.baseline_set
        for name in ("one-process-two-threads", "torchrun-two-processes"):
            doc[f"{name}_over_baseline"] = arms[name]["examples_per_s"] / arms["baseline"]["examples_per_s"]
    write_result(args.out, doc, config=cfg)
    print(json.dumps({k: v for k, v in doc.items() if "_over_" in k or k.startswith("max_abs")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
