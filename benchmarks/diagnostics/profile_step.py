"""torch.profiler view of one stage-1 or stage-2 training step (or one scoring batch) on the offline SmolLM2.

    python benchmarks/diagnostics/profile_step.py --mode stage1 --batch 2 [--candidate-pass cached] [--attn eager]

Prints the operators with the most self CPU time and the most self memory; with --out also writes that text.
One warm-up step runs first so that allocator and tokenizer caches are not profiled.
"""

from __future__ import annotations

from pathlib import Path

from delrec.benchmarking import parser, set_threads, stage_step


def main(argv=None) -> None:
    ap = parser(__doc__, threads=1)
    ap.add_argument("--mode", choices=("infer", "stage1", "stage2"), default="stage1")
    ap.add_argument("--precision", choices=("fp32", "bf16", "bf16-weights"), default="bf16")
    ap.add_argument("--attn", default="", help="attention implementation for the step (sdpa, eager); empty = default")
    ap.add_argument("--candidate-pass", default="auto", choices=("auto", "packed", "cached"))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--out", type=Path, help="also write the tables to this text file")
    args = ap.parse_args(argv)
    from torch.profiler import ProfilerActivity, profile

    set_threads(args.threads)
    step, _ = stage_step(args.mode, args.precision, args.batch, attn=args.attn, candidate_pass=args.candidate_pass)
    step(0)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(1)
    table = prof.key_averages()
    text = (f"# {args.mode}, {args.precision}, attn={args.attn or 'default'}, pass={args.candidate_pass}, "
            f"batch {args.batch}, "
            f"{args.threads} thread(s)\n\n"
            + table.table(sort_by="self_cpu_time_total", row_limit=args.rows) + "\n"
            + table.table(sort_by="self_cpu_memory_usage", row_limit=args.rows // 2) + "\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
