r"""Stage throughput (training, inference) on the offline SmolLM2 as a fraction of this machine's matmul peak.

Each mode runs in its own subprocess (its peak RSS is its own): `infer` (LSR scoring), `stage1` (TA-style
batch: scores, CE, gradient w.r.t. the soft prompt only), `stage2` (AdaLoRA on q/v: scores, CE + orthogonal
regulariser, backward, optimiser step, update_and_allocate). The peak is a large torch.matmul measured in the
same invocation, fp32 and bf16. FLOPs are counted as 2 x (non-embedding parameters) per processed token for a
forward pass and 3x that for a training step (forward + backward, the usual 6N rule), which overstates the
stage-1/2 backward (no weight gradients for the frozen LM), so the training fractions are upper bounds.

    python benchmarks/speed/throughput.py [--threads 2] [--steps 3]
        # -> benchmarks/results/stage_throughput/precision.{json,md}
    python benchmarks/speed/throughput.py --precisions bf16 --passes cached,packed \
        --out benchmarks/results/stage_throughput/packed-vs-cached.json
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time

from delrec.benchmarking import RESULTS, parser, peak_rss_kb, set_threads, stage_step, write_result


def matmul_peak(dtype_name: str, n: int = 4096, reps: int = 5) -> float:
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    t = time.perf_counter()
    for _ in range(reps):
        torch.matmul(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def worker(mode: str, precision: str, batch: int, steps: int, candidate_pass: str = "auto") -> dict:
    step, info = stage_step(mode, precision, batch, candidate_pass=candidate_pass)
    times = []
    for i in range(steps + 1):  # the first step warms up allocator and caches
        t = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t)
    sec = sum(times[1:]) / steps
    flops = 2 * info["n_params"] * info["tokens"] * (1 if mode == "infer" else 3)
    return {"mode": mode, "precision": precision, "pass": candidate_pass, "batch": batch,
            "s_per_batch": round(sec, 3), "examples_per_s": round(batch / sec, 3),
            "tokens_per_batch": info["tokens"], "flop_per_s": flops / sec, "peak_rss_mb": peak_rss_kb() // 1024}


def main(argv=None) -> None:
    ap = parser(__doc__, threads=2, out=RESULTS / "stage_throughput" / "precision.json",
                out_help="the result JSON; its table goes beside it as .md")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--worker", nargs=3, metavar=("MODE", "PRECISION", "PASS"))
    ap.add_argument("--passes", default="auto", help="lm.candidate_pass values to compare, e.g. cached,packed")
    ap.add_argument("--precisions", default="fp32,bf16,bf16-weights")
    ap.add_argument("--modes", default="infer,stage1,stage2")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    if args.worker:
        mode, precision, candidate_pass = args.worker
        print(json.dumps(worker(mode, precision, args.batch, args.steps, candidate_pass)))
        return
    peak = {p: matmul_peak(p) for p in ("fp32", "bf16")}
    peak["bf16-weights"] = peak["bf16"]
    rows = []
    # Modes innermost-but-one so that the passes of one mode run back to back (same machine load).
    for precision, mode, candidate_pass in itertools.product(args.precisions.split(","), args.modes.split(","),
                                                             args.passes.split(",")):
        cmd = [sys.executable, __file__, "--worker", mode, precision, candidate_pass, "--threads",
               str(args.threads), "--steps", str(args.steps), "--batch", str(args.batch)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        row = json.loads(out)
        row["fraction_of_peak"] = round(row["flop_per_s"] / peak[precision], 4)
        rows.append(row)
        print(row, flush=True)
    doc = {"threads": args.threads, "matmul_peak_flop_per_s": peak, "rows": rows}
    lines = [f"# Stage throughput, SmolLM2-135M, batch {args.batch} x 20 candidates, {args.threads} threads", "",
             f"matmul peak: fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s", "",
             "| mode | precision | candidate pass | examples/s | s/batch | peak RSS MB | GFLOP/s | fraction of peak |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['precision']} | {r['pass']} | {r['examples_per_s']} | {r['s_per_batch']} | "
              f"{r['peak_rss_mb']} | "
              f"{r['flop_per_s'] / 1e9:.1f} | {r['fraction_of_peak']} |" for r in rows]
    by = {(r["mode"], r["precision"], r["pass"]): r for r in rows}
    ratios = [f"- {m}, {p}: packed / cached = {r['examples_per_s'] / by[m, p, 'cached']['examples_per_s']:.2f}x "
              f"examples/s, peak RSS {r['peak_rss_mb']} vs {by[m, p, 'cached']['peak_rss_mb']} MB"
              for (m, p, c), r in by.items() if c == "packed" and (m, p, "cached") in by]
    if ratios:
        lines += ["", "Before (cached) / after (packed), measured in this run:", ""] + ratios
    write_result(args.out, doc, markdown="\n".join(lines))


if __name__ == "__main__":
    main()
