"""stage2.lower_states_dir on real data: a second stage-2 run reads the first run's lower-layer states.

    python benchmarks/speed/lower_states.py runs/ml-100k-b20k-lsr [--n 16]
        # -> benchmarks/results/lower_states/ml-100k.json

Two short lsr-only runs (n training and n/2 validation examples of RUN's candidate files, 4 steps, so every
example is revisited) share one states folder; written: both wall times and validation NDCG@5 (the same when
the states read back are exact), the file's size and its size per stored prompt.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from delrec.benchmarking import RESULTS, parser, write_result


def main(argv=None) -> int:
    ap = parser(__doc__, out=RESULTS / "lower_states" / "ml-100k.json")
    ap.add_argument("run", type=Path, help="a finished run folder (its config.yaml and candidates/)")
    ap.add_argument("--n", type=int, default=16)
    args = ap.parse_args(argv)
    from delrec.config import load_config
    from delrec.data.candidates import read_candidates
    from delrec.data.registry import load_dataset
    from delrec.lm.adapters import add_adalora
    from delrec.lm_rows import lsr_examples, new_lm, prompt_builder
    from delrec.runs import RunDir
    from delrec.stages.finetune import finetune

    cfg = load_config(str(args.run / "config.yaml"))
    ds, run = load_dataset(cfg.data), RunDir(args.run)
    sets = {s: read_candidates(run.path("candidates", f"{s}-{run.data_key(cfg)}.jsonl"), ds) for s in ("train", "valid")}
    builder = prompt_builder(cfg, ds)
    train = lsr_examples(cfg, builder, sets["train"][:args.n], False, None)
    valid = lsr_examples(cfg, builder, sets["valid"][:args.n // 2], False, None)
    out = {"runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        s2 = dataclasses.replace(cfg.stage2, steps=4, eval_every=4, warmup=1, max_eval_examples=len(valid),
                                 lower_states_dir=f"{tmp}/states")
        for i in range(2):
            scorer = new_lm(cfg)
            add_adalora(scorer.backbone, s2)
            start = time.time()
            res = finetune(scorer, None, train, valid, s2, Path(tmp) / f"run{i}", seed=0)
            out["runs"].append({"wall_s": round(time.time() - start, 1), "valid_ndcg@5": res["best_valid"]})
        (f,) = Path(tmp, "states").iterdir()
        prompts = len({e.prompt for e in train + valid})
        out |= {"file_bytes": f.stat().st_size, "prompts": prompts, "bytes_per_prompt": f.stat().st_size // prompts}
    write_result(args.out, out, config=cfg)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
