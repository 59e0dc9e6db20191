"""`delrec` command line: prepare | teach | distill | finetune | run | evaluate | recommend | prompt."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from delrec import DelrecError
from delrec.choices import TEACHER_NAMES

# Commands that write a run folder; without --config they use the demo preset inside the package.
RUN_COMMANDS = ("teach", "distill", "finetune", "run")


def _common(p: argparse.ArgumentParser, out: bool = True) -> None:
    p.add_argument("--config", help="YAML preset (configs/*.yaml); run, teach, distill and finetune "
                                    "default to the built-in demo preset")
    p.add_argument("--data-dir", help="folder with the dataset's files (default: $DELREC_DATA/<dataset>)")
    if out:
        p.add_argument("--out", help="run directory")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a setting")


def _config(args):
    from delrec.config import load_config

    overrides = list(args.set)
    if getattr(args, "data_dir", None):
        overrides.append(f"data.data_dir={args.data_dir}")
    if getattr(args, "out", None):
        overrides.append(f"out={args.out}")
    if getattr(args, "dataset", None):
        overrides.append(f"data.dataset={args.dataset}")
    return load_config(args.config or (demo_preset() if args.command in RUN_COMMANDS else None), overrides)


def demo_preset() -> str:
    from importlib.resources import files

    return str(files("delrec") / "presets" / "demo.yaml")


def cmd_prepare(args) -> int:
    from delrec.data.prepare import prepare

    print(json.dumps(prepare(_config(args).data), indent=2))
    return 0


def cmd_teach(args) -> int:
    from delrec.pipeline import teach_command

    cfg = _config(args)
    if args.model:  # replace() validates the section again (SASRec's hidden/heads check, say)
        cfg.teacher = dataclasses.replace(cfg.teacher, models=[args.model])
    teach_command(cfg)
    return 0


def cmd_stage(args) -> int:
    from delrec import pipeline

    cfg = _config(args)
    if args.config is None:  # said once the settings are valid: a bad --set stays a one-line error
        from delrec.console import header

        header(f"no --config: the built-in demo preset ({demo_preset()})")
    {"distill": pipeline.distill_command, "finetune": pipeline.finetune_command,
     "run": pipeline.run_command}[args.command](cfg, resume=args.resume)
    return 0


def cmd_evaluate(args) -> int:
    from delrec.recommend import evaluate_command

    evaluate_command(args.run, args.candidates, out=args.out)
    return 0


def cmd_recommend(args) -> int:
    from delrec.recommend import Recommender

    rec = Recommender.load(args.run, args.method)
    history = args.history.split(",")
    cands = args.candidates.split(",") if args.candidates else None
    ranked = rec.recommend(history, cands, top=args.top)  # unknown ids fail here, before anything is printed
    for line in rec.describe(history, len(cands or []), args.run):
        print(line)
    print(f"\n{'rank':>4}  {'score':>10}  {'item':>10}  title")
    for rank, (title, raw, score) in enumerate(ranked, 1):
        print(f"{rank:>4}  {score:10.4f}  {raw:>10}  {title}")
    return 0


def cmd_prompt(args) -> int:
    from delrec.pipeline import show_prompt

    print(show_prompt(_config(args), task=args.task, index=args.index))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="delrec", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="load a dataset and print its statistics")
    p.add_argument("--dataset")
    _common(p, out=False)
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser("teach", help="train a teacher (SASRec/GRU4Rec/Caser) and export its top-k")
    p.add_argument("--model", choices=list(TEACHER_NAMES))
    _common(p)
    p.set_defaults(func=cmd_teach)
    for name, text in [("distill", "stage 1: distil the teacher into the soft prompt"),
                       ("finetune", "stage 2: AdaLoRA fine-tuning with the frozen soft prompt"),
                       ("run", "the whole pipeline: data, teachers, stage 1, stage 2, evaluation")]:
        p = sub.add_parser(name, help=text)
        _common(p)
        p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
        p.set_defaults(func=cmd_stage)
    p = sub.add_parser("evaluate", help="score every method of a trained run on a candidate JSONL file")
    p.add_argument("--run", required=True)
    p.add_argument("--candidates", required=True)
    p.add_argument("--out", help="metrics JSON to write, a .results.md table beside it (default: "
                                 "<run>/evaluations/<file>.metrics.json)")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("recommend", help="rank candidate items for a history with a trained run")
    p.add_argument("--run", required=True)
    p.add_argument("--history", required=True, help="raw item ids, comma-separated, oldest first")
    p.add_argument("--candidates", help="raw item ids to rank (default: 20 sampled)")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--method", default="delrec", help="which trained method ranks (default: delrec)")
    p.set_defaults(func=cmd_recommend)
    p = sub.add_parser("prompt", help="show a rendered prompt with the soft-prompt slot marked")
    p.add_argument("--task", choices=["ta", "rps", "lsr"], default="lsr")
    p.add_argument("--index", type=int, default=0)
    _common(p, out=False)
    p.set_defaults(func=cmd_prompt)
    return ap


def main(argv=None) -> int:
    from delrec.console import quiet_libraries

    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        return args.func(args)
    except DelrecError as e:
        print(f"delrec: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
