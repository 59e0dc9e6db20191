"""Zero-shot LM scorers compared on the *validation* users of a config (never the test users).

    python benchmarks/quality/scorer_choice.py --config configs/ml-100k.yaml --data-dir $DELREC_DATA/ml-100k \
        --out benchmarks/results/scorer_choice/ml-100k.json

Each variant changes only lm.* settings (scorer, length normalisation, whether candidates are listed, history
length through data.max_history): the untrained LM with no soft prompt scores the same validation candidate
sets. Writes --out (.json) and the .md beside it with HR@1 / HR@5 / NDCG@5, bootstrap CI95 and examples/s.
`--backbones a,b` scores every variant with each backbone in turn (rows `<backbone>/<variant>`), in one
invocation so that their examples/s compare; `--set` overrides the config (e.g. data.max_eval_examples=200).
"""

from __future__ import annotations

import dataclasses
import sys
import time

from delrec.benchmarking import command, parser, set_threads, write_result

VARIANTS = {  # name -> changes to the config (title-likelihood with mean length normalisation by default)
    "config": {},
    "sum-norm": {"lm.length_norm": "sum"},
    "unlisted": {"lm.list_candidates": False},
    "history-5": {"data.max_history": 5},
    "first-token": {"lm.scorer": "first-token"},
    "index-letter": {"lm.scorer": "index-letter"},
}


def _with(cfg, changes: dict):
    for key, value in changes.items():
        section, name = key.split(".")
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{name: value})})
    return cfg


def main(argv=None) -> int:
    ap = parser(__doc__, run_config=True, threads=1, out="",
                out_help="the result, e.g. benchmarks/results/scorer_choice/ml-100k.json (.md beside it)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--backbones", default="", help="comma-separated lm.backbone values (default: the config's)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    args = ap.parse_args(argv)
    import tempfile

    from delrec.config import load_config
    from delrec.evaluate import metric_row, score_examples
    from delrec.lm.backbone import load_backbone
    from delrec.lm.scoring import scorer_from_config
    from delrec.pipeline import prepare, prompt_builder

    set_threads(args.threads)
    base = load_config(args.config, [f"data.data_dir={args.data_dir}", *args.set])
    names = args.backbones.split(",") if args.backbones else [base.lm.backbone]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for bb in names:
            base = dataclasses.replace(base, out=tmp, lm=dataclasses.replace(base.lm, backbone=bb))
            backbone = load_backbone(base.lm)
            for variant in args.variants.split(","):
                name = f"{bb}/{variant}" if args.backbones else variant
                cfg = _with(base, VARIANTS[variant])
                ctx = prepare(cfg)
                builder = prompt_builder(cfg, ctx.dataset)
                examples = [builder.lsr(c, soft=False) for c in ctx.cands["valid"]]
                scorer = scorer_from_config(backbone, cfg.lm)
                start = time.perf_counter()
                scores = score_examples(scorer, examples, None, batch_size=cfg.eval.batch_size, desc=name)
                seconds = time.perf_counter() - start
                rows[name] = metric_row(scores, [e.label for e in examples], n_boot=cfg.eval.bootstrap) | {
                    "examples_per_s": round(len(examples) / seconds, 3), "changes": VARIANTS[variant]}
                print(name, {k: round(rows[name][k], 4) for k in ("hr@1", "hr@5", "ndcg@5")}, flush=True)
    doc = {"config": args.config, "split": "valid", "n": len(examples), "rows": rows}
    lines = [f"# Zero-shot scorers on validation ({args.config}, {len(examples)} users)", "",
             "| variant | changes | HR@1 | HR@5 | NDCG@5 | HR@1 CI95 | examples/s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {r['changes'] or 'as configured'} | {r['hr@1']:.4f} | {r['hr@5']:.4f} | {r['ndcg@5']:.4f} | "
              f"{r['ci95']['hr@1'][0]:.3f}-{r['ci95']['hr@1'][1]:.3f} | {r['examples_per_s']} |"
              for n, r in rows.items()]
    # the base config's digest: each variant's changes to it are in its row
    write_result(args.out.with_suffix(".json"), doc, config=base,
                 cmd=command(None if argv is None else [__file__, *argv]), markdown="\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
