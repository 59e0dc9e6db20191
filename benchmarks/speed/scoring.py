"""Benchmark the candidate scorers: examples/s and peak memory, cached vs the naive per-candidate reference.

Models: the offline SmolLM2-135M (real weights) and a randomly initialised T5 of flan-t5-small's shape
(d_model 512, 8+8 layers, 6 heads, d_ff 1024, vocab 32128, gated-gelu) with a locally trained tokenizer.
Workload: batch 8, 20 candidates, ML-100K-like LSR prompts (10 history titles, 20 candidate titles, 100
soft-prompt vectors); fp32 and bf16 autocast; inference mode. Every (model, precision, method) runs in a
fresh subprocess, so its peak RSS (VmHWM) is its own: a process that ran another method first would count
heap pages that method freed but the allocator kept.

    python benchmarks/speed/scoring.py [--threads 1]     # writes benchmarks/results/scorer_speed/batch8.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from delrec.benchmarking import RESULTS, parser, set_threads, write_result

# title-likelihood-one-pass: all B*C rows continued in one pass (chunk_rows=0), to show what chunking buys.
METHODS = ("title-likelihood", "title-likelihood-one-pass", "first-token", "index-letter", "naive-reference")


def _backbone(model: str, titles):
    import torch

    from delrec.config import LMConfig
    from delrec.lm.backbone import from_model, load_backbone
    from delrec.lm.tiny import tiny_tokenizer

    if model == "smollm2":
        return load_backbone(LMConfig(backbone="smollm2-offline", device="cpu"))
    from transformers import T5Config, T5ForConditionalGeneration

    tok = tiny_tokenizer("t5", vocab_texts=titles, vocab_size=8000)  # ids < 8000 fit the 32128 vocab
    cfg = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_decoder_layers=8,
                   num_heads=6, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(cfg)
    with torch.no_grad():
        # Random init gives the untied lm_head logits of std ~sqrt(d_model) = 22; their softmax tails then
        # underflow into denormal floats, which the CPU handles ~30x slower. A trained model's logits are a
        # few units wide: scale the head to that, so the benchmark measures the scorer, not denormals.
        model.lm_head.weight.mul_(cfg.d_model ** -0.5)
    return from_model(model, tok, name="random-flan-t5-small-shape")


def worker(model: str, precision: str, method: str, batch: int, n_cands: int, naive_examples: int) -> dict:
    import torch

    from delrec.benchmarking import lsr_rows, movie_titles, peak_rss_kb
    from delrec.lm.scoring import CandidateScorer
    from delrec.lm.soft_prompt import SoftPrompt

    titles = movie_titles()
    bb = _backbone(model, titles)
    soft = SoftPrompt.create(100, bb, "vocab", seed=0)
    rows = lsr_rows(titles, batch, n_cands)
    bf16 = precision == "bf16-autocast"
    kind = method if method in ("first-token", "index-letter") else "title-likelihood"
    # The cached continuation is what this benchmark names; the packed pass is compared in throughput.py.
    scorer = CandidateScorer(bb, kind, autocast_bf16=bf16, chunk_rows=0 if method.endswith("one-pass") else 16,
                             candidate_pass="cached")
    prompts = [r[1] if kind == "index-letter" else r[0] for r in rows]
    cands = [r[2] for r in rows]
    n = naive_examples if method == "naive-reference" else batch
    fn = scorer.reference if method == "naive-reference" else scorer.score
    with torch.inference_mode():
        fn(prompts[:1], [cands[0][:2]], soft)  # warm-up (allocator, kernels)
        base = peak_rss_kb()
        t = time.perf_counter()
        scores = fn(prompts[:n], cands[:n], soft)
        seconds = time.perf_counter() - t
        peak = peak_rss_kb()
        extra = {}
        if method == "naive-reference":  # after the measurement: agreement of the fast path on the same rows
            extra["max_abs_diff_cached_vs_naive"] = float((scorer.score(prompts[:n], cands[:n], soft)
                                                           - scores).abs().max())
    prep = [scorer.prepare(p, True)[0] for p in prompts[:n]]
    return {"model": bb.name, "precision": precision, "method": method, "examples": n, "candidates": n_cands,
            "prompt_tokens": round(sum(map(len, prep)) / n + soft.n_soft, 1),
            "title_tokens": round(sum(len(scorer.title_ids(c)) for cs in cands[:n] for c in cs) / (n * n_cands), 1),
            "seconds": round(seconds, 3), "examples_per_s": round(n / seconds, 3),
            "peak_rss_mb": round(peak / 1024), "peak_growth_mb": round((peak - base) / 1024),
            "threads": torch.get_num_threads(), **extra}


def _markdown(rows: list[dict]) -> str:
    r0 = rows[0]
    intro = (f"CPU, {r0['threads']} torch thread(s), batch {r0['examples']} examples x {r0['candidates']} "
             "candidates, ML-100K-like LSR prompts (10 history titles, 20 candidate titles, 100 soft vectors), "
             "inference mode. Each row ran in a fresh process; `growth` is how much the process's peak RSS rose "
             "during the timed call (model weights excluded). title-likelihood continues the prompt caches in "
             "chunks of 16 (prompt, title) rows sorted by title length; one-pass continues all rows at once. "
             "The naive reference runs one full forward pass per candidate, on fewer examples.")
    lines = ["# Candidate scorer benchmark", "", intro, "",
             "| model | precision | method | examples/s | s | prompt tok | title tok | peak RSS MB | growth MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['precision']} | {r['method']} | {r['examples_per_s']:.3f} | "
                     f"{r['seconds']:.2f} | {r['prompt_tokens']} | {r['title_tokens']} | {r['peak_rss_mb']} | "
                     f"{r['peak_growth_mb']} |")
    head = "| model | precision | title-likelihood / naive | one-pass / naive | max abs diff cached vs naive |"
    lines += ["", head, "|---|---|---|---|---|"]
    for r in rows:
        if r["method"] != "naive-reference":
            continue
        same = {x["method"]: x for x in rows if x["model"] == r["model"] and x["precision"] == r["precision"]}
        ratio = {m: f"{same[m]['examples_per_s'] / r['examples_per_s']:.1f}x" if m in same else "-"
                 for m in ("title-likelihood", "title-likelihood-one-pass")}
        lines.append(f"| {r['model']} | {r['precision']} | {ratio['title-likelihood']} | "
                     f"{ratio['title-likelihood-one-pass']} | {r['max_abs_diff_cached_vs_naive']:.2e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = parser(__doc__, threads=0, out=RESULTS / "scorer_speed" / "batch8.json",
                out_help="the result JSON; its table goes beside it as .md")
    ap.add_argument("--models", default="smollm2,t5")
    ap.add_argument("--precisions", default="fp32,bf16-autocast")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--naive-examples", type=int, default=2)
    ap.add_argument("--worker", nargs=3, metavar=("MODEL", "PRECISION", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        set_threads(args.threads)
        row = worker(*args.worker, args.batch, args.candidates, args.naive_examples)
        print("RESULT " + json.dumps(row), flush=True)
        return
    rows = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for model in args.models.split(","):
        for precision in args.precisions.split(","):
            for method in args.methods.split(","):
                cmd = [sys.executable, __file__, "--worker", model, precision, method, "--batch", str(args.batch),
                       "--candidates", str(args.candidates), "--naive-examples", str(args.naive_examples),
                       "--threads", str(args.threads)]
                proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
                if proc.returncode:
                    sys.exit(f"benchmark worker {model} {precision} {method} failed:\n{proc.stderr[-3000:]}")
                rows += [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                print(f"{model} {precision} {method}: {rows[-1]['examples_per_s']} examples/s", flush=True)
    table = _markdown(rows)
    write_result(args.out, {"rows": rows}, markdown=table)
    print(table)

if __name__ == "__main__":
    main()
