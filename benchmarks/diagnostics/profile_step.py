"""torch.profiler view of one stage-1 or stage-2 training step (or one scoring batch) on the offline SmolLM2.

    python benchmarks/diagnostics/profile_step.py --mode stage1 --batch 2 [--candidate-pass cached] [--attn eager]

Prints the operators with the most self CPU time and the most self memory; with --out also writes that text.
One warm-up step runs first so that allocator and tokenizer caches are not profiled.
"""

from __future__ import annotations

from pathlib import Path

from delrec.benchmarking import lsr_rows, movie_titles, parser, set_threads


# A copy of benchmarks/speed/throughput.py's make_step: scripts do not import one another, so that each runs
# on its own. Change both together (or move it into delrec.benchmarking), so the profile is of the timed step.
def make_step(mode: str, precision: str, batch: int, attn: str = "", candidate_pass: str = "auto"):
    """(step(i), info): one scoring batch or training step of `mode` on SmolLM2, and its token count."""
    import torch
    import torch.nn.functional as F

    from delrec.config import LMConfig, Stage2Config
    from delrec.lm.backbone import load_backbone
    from delrec.lm.scoring import CandidateScorer
    from delrec.lm.soft_prompt import SoftPrompt
    from delrec.lm.adapters import add_adalora, orthogonal_regulariser

    # bf16 = fp32 weights under bf16 autocast; bf16-weights = the frozen LM stored in bf16 (no per-call casts)
    backbone = load_backbone(LMConfig(backbone="smollm2-offline",
                                      dtype="bf16" if precision == "bf16-weights" else "fp32"))
    scorer = CandidateScorer(backbone, "title-likelihood", autocast_bf16=precision == "bf16",
                             candidate_pass=candidate_pass)
    if attn:
        backbone.model.set_attn_implementation(attn)
    soft = SoftPrompt.create(20, backbone, seed=0)
    rows = lsr_rows(movie_titles(), batch, 20)
    prompts, cands = [r[0] for r in rows], [r[2] for r in rows]
    labels = torch.zeros(batch, dtype=torch.long)
    n_params = sum(p.numel() for n, p in backbone.model.named_parameters() if "embed" not in n)
    tokens = sum(len(scorer.prepare(p, True)[0]) + 20 for p in prompts)  # prompt + soft
    tokens += sum(len(scorer.title_ids(t)) for c in cands for t in c)
    opt = None
    if mode == "stage2":
        cfg = Stage2Config(steps=100, init_r=16, target_r=8, warmup=0)
        model = add_adalora(backbone, cfg)
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(i: int) -> None:
        if mode == "infer":
            with torch.no_grad():
                scorer.score(prompts, cands, soft)
        elif mode == "stage1":
            loss = F.cross_entropy(scorer.score(prompts, cands, soft), labels)
            torch.autograd.grad(loss, soft.weight)
        else:
            loss = F.cross_entropy(scorer.score(prompts, cands, soft), labels)
            (loss + 0.5 * orthogonal_regulariser(backbone.model)).backward()
            opt.step()
            backbone.model.base_model.update_and_allocate(i)
            opt.zero_grad()
    return step, {"tokens": tokens, "n_params": n_params}



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
    step, _ = make_step(args.mode, args.precision, args.batch, attn=args.attn, candidate_pass=args.candidate_pass)
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
