r"""Where the tokens of a training example go: instruction, soft prompt, history, teacher slots, candidates.

    python benchmarks/diagnostics/prompt_tokens.py --config configs/ml-100k.yaml --data-dir $DELREC_DATA/ml-100k \
        [--set lm.title_years=false --out benchmarks/results/prompt_tokens/ml-100k-no-years.json]

Writes benchmarks/results/prompt_tokens/ml-100k.json unless --out names another file. Counts with the
configured LM's tokenizer over the first `--n` training examples of each task (LSR with and without the soft
prompt, TA, RPS; the teacher's slots filled from the validation history as stand-ins, which have the length
of real titles). "titles" are the tokens of the 20 scored candidate titles, which
the packed pass feeds after the prompt; "title years" is how many of those are a " (1995)"-style year;
"before_soft" is the instruction ahead of the soft prompt, the same text for every example of a task.
The model itself never runs.
"""

from __future__ import annotations

import random
import sys
import tempfile

from delrec.benchmarking import RESULTS, parser, write_result


def main(argv=None) -> int:
    ap = parser(__doc__, run_config=True, out=RESULTS / "prompt_tokens" / "ml-100k.json")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--set", action="append", default=[], help="section.key=value, as for delrec run")
    args = ap.parse_args(argv)
    from delrec.config import load_config
    from delrec.data.catalog import without_year
    from delrec.lm.backbone import load_backbone
    from delrec.pipeline import prepare, prompt_builder
    from delrec.prompts.templates import SOFT

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [f"data.data_dir={args.data_dir}", f"out={tmp}", *args.set])
        ctx = prepare(cfg)
    tok = load_backbone(cfg.lm).tokenizer  # a cached load of the weights: under a second
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])
    builder = prompt_builder(cfg, ctx.dataset)
    rng = random.Random(0)
    sets = ctx.cands["train"][:args.n]
    tasks = {"lsr": [builder.lsr(c, soft=True) for c in sets], "lsr-no-soft": [builder.lsr(c, soft=False) for c in sets]}
    stand_in = [list(c.candidates[:cfg.teacher.topk]) for c in sets]  # title-length stand-ins for the teacher
    tasks["ta"] = [x for c, s in zip(sets, stand_in) if (x := builder.ta(c.history, s[0], rng))]
    tasks["rps"] = [x for c, s in zip(sets, stand_in) if (x := builder.rps(c.history, s, rng))]
    rows = {}
    for name, examples in tasks.items():
        hist_tokens = prompt_tokens = title_tokens = year_tokens = before_soft = 0
        for e in examples:
            prompt_tokens += count(e.prompt.replace(SOFT, ""))
            before_soft += count(e.prompt.split(SOFT, 1)[0]) if SOFT in e.prompt else 0
            title_tokens += sum(count(" " + t) for t in e.candidates)
            year_tokens += sum(count(" " + t) - count(" " + without_year(t)) for t in e.candidates)
            hist = e.prompt.split("in order: ", 1)[1].split(".\n", 1)[0] if "in order: " in e.prompt else ""
            hist_tokens += count(hist)
        n = max(len(examples), 1)
        soft = cfg.lm.n_soft if SOFT in examples[0].prompt else 0
        rows[name] = {"examples": len(examples), "prompt_text": prompt_tokens / n, "soft_prompt": soft,
                      "history": hist_tokens / n, "instruction_and_slots": (prompt_tokens - hist_tokens) / n,
                      "titles": title_tokens / n, "title_years": year_tokens / n, "before_soft": before_soft / n,
                      "packed_row": prompt_tokens / n + soft + title_tokens / n - len(examples[0].candidates)}
        print(name, {k: round(v, 1) for k, v in rows[name].items()}, flush=True)
    write_result(args.out, {"rows": rows}, config=cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
