"""title-likelihood for decoder-only LMs in one packed pass per prompt.

Each row holds its prompt followed by all C candidate titles (each minus its last token, which predicts
nothing we score). A 4D attention mask lets a title token see the whole prompt and the earlier tokens of its
own title only, and position ids restart every title at the prompt's length, so each title is scored exactly as
if it followed the prompt alone:

    keys ->     prompt   title 0   title 1   pad
    prompt      causal
    title 0     all      causal
    title 1     all                causal
    pad                                      causal (never read; a row needs one key)

Why not the cached path (`CandidateScorer._continue`) when training: that one gathers a copy of the prompt's
key/value cache for every (prompt, title) row, expands grouped-query heads for each copy, and runs attention
with 10-token queries against 400-token keys whose CPU backward is slow; the profile of a SmolLM2 stage-1 step
put ~40% of its time there. The packed pass computes the same numbers with one ordinary forward and backward
(benchmarks/results/stage_throughput/packed-vs-cached.md: before/after on SmolLM2, CPU).

Limits: the mask is handed to the model as a ready 4D mask, which transformers passes to every layer as is, so
a sliding-window layer sees the whole packed row; rows longer than a model's window (Gemma-3's 512) are scored
as by a full-attention layer. Use `lm.candidate_pass=cached` for such models. Logits for all title positions
of a batch are held at once ([B, ~C x title length, vocab]); lower eval.batch_size for very large vocabularies.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from delrec.lm.backbone import forward_params


def _layout(prompt_lengths, titles, P: int):
    """Per row: prompt length and per title (column of its first fed token, token count); prompts are
    left-padded to end at column P, so every row's titles start at column P."""
    rows = []
    for lp, row_titles in zip(prompt_lengths, titles):
        offsets, col = [], P
        for t in row_titles:
            offsets.append((col, len(t)))
            col += len(t) - 1
        rows.append((lp, offsets, col))
    return rows


def _mask(layout, P: int, S: int, dtype: torch.dtype, as_bool: bool, device) -> torch.Tensor:
    """[B, 1, S, S] attention mask: bool (True = attend) for SDPA-style kernels, additive float otherwise."""
    B = len(layout)
    block = torch.full((B, S), -2, dtype=torch.long)  # -1 prompt, c title c, -2 padding
    for b, (lp, offsets, _) in enumerate(layout):
        block[b, P - lp:P] = -1
        for c, (start, n) in enumerate(offsets):
            block[b, start:start + n - 1] = c
    q, k = block.unsqueeze(2), block.unsqueeze(1)
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    allowed = causal & (((k == -1) & (q != -2)) | (k == q))
    allowed = allowed.unsqueeze(1).to(device)
    if as_bool:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)


def packed_title_scores(scorer, prepared, candidates, soft) -> torch.Tensor:
    """Scores [B, C] equal (up to float rounding) to the cached path's, in one forward pass."""
    prompts, titles, pieces = embedded_pieces(scorer, prepared, candidates, soft)
    return scores_from_pieces(scorer, prompts, pieces, titles)


def embedded_pieces(scorer, prepared, candidates, soft):
    """Input embeddings of each prompt ([lp, D], soft vectors spliced in) and of each title's fed tokens
    ([n - 1, D]: the last token is never fed); with the title token ids."""
    titles = [[scorer.title_ids(t) for t in cands] for cands in candidates]
    prompt_emb, _, _, lengths = scorer.embed(prepared, soft, left_pad=True)
    P = prompt_emb.shape[1]
    prompts = [prompt_emb[b, P - int(lp):] for b, lp in enumerate(lengths.tolist())]
    emb_layer = scorer.backbone.input_embeddings()
    pieces = []
    for b, row in enumerate(titles):
        fed = [tok for t in row for tok in t[:-1]]
        flat = emb_layer(torch.tensor(fed, device=prompt_emb.device)).to(prompt_emb.dtype) if fed else None
        sizes = [len(t) - 1 for t in row]
        pieces.append(list(flat.split(sizes)) if fed else [prompt_emb.new_zeros(0, prompt_emb.shape[-1])] * len(row))
    return prompts, titles, pieces


def pack(prompts, pieces, titles):
    """One packed row per prompt: inputs [B, S, D], position ids [B, S], the layout and the prompt width P."""
    B, D, device = len(prompts), prompts[0].shape[-1], prompts[0].device
    lengths = [int(p.shape[0]) for p in prompts]
    P = max(lengths)
    layout = _layout(lengths, titles, P)
    S = max(end for _, _, end in layout)
    rows, pos = [], torch.zeros(B, S, dtype=torch.long)
    for b, (lp, offsets, end) in enumerate(layout):
        parts = [prompts[b].new_zeros(P - lp, D), prompts[b], *[x.to(prompts[b].dtype) for x in pieces[b]],
                 prompts[b].new_zeros(S - end, D)]
        rows.append(torch.cat(parts))
        pos[b, P - lp:P] = torch.arange(lp)
        for start, n in offsets:
            pos[b, start:start + n - 1] = torch.arange(lp, lp + n - 1)
    return torch.stack(rows), pos.to(device), layout, P


def packed_mask(model, layout, P: int, S: int, dtype, device) -> torch.Tensor:
    as_bool = model.config._attn_implementation in ("sdpa", "flash_attention_2", "flex_attention")
    return _mask(layout, P, S, dtype, as_bool, device)


def scores_from_pieces(scorer, prompts, pieces, titles, first_upper: int | None = None) -> torch.Tensor:
    """Scores [B, C] from per-prompt and per-title input states. With `first_upper`, the states are those
    entering block `first_upper` (lm/layer_cache.py) and only the blocks from there on run."""
    from delrec.lm.blocks import upper_only

    model = scorer.backbone.model
    B, C = len(titles), len(titles[0])
    embeds, pos, layout, P = pack(prompts, pieces, titles)
    S, device = embeds.shape[1], embeds.device
    mask = packed_mask(model, layout, P, S, embeds.dtype, device)
    keep = torch.arange(P - 1, S, device=device)  # logits from the answer position (column P - 1) on
    kwargs = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": pos, "use_cache": False}
    with upper_only(model, first_upper, embeds) if first_upper is not None else nullcontext():
        if "logits_to_keep" in forward_params(model):
            logits = model(**kwargs, logits_to_keep=keep).logits.float()
        else:
            logits = model(**kwargs).logits[:, keep].float()
    lse = torch.logsumexp(logits, -1)  # [B, S - P + 1]
    T = max(len(t) for row in titles for t in row)
    k_idx = torch.zeros(B * C, T, dtype=torch.long)
    tgt = torch.zeros(B * C, T, dtype=torch.long)
    tmask = torch.zeros(B * C, T, dtype=torch.long)
    for b, (_, offsets, _) in enumerate(layout):
        for c, (start, n) in enumerate(offsets):
            r = b * C + c
            # token 0 is predicted at the answer position (kept index 0), token j > 0 by the title's token j - 1
            k_idx[r, 1:n] = torch.arange(start, start + n - 1) - (P - 1)
            tgt[r, :n] = torch.tensor(titles[b][c])
            tmask[r, :n] = 1
    b_idx = torch.arange(B).repeat_interleave(C).unsqueeze(1).expand(B * C, T)
    b_idx, k_idx, tgt, tmask = (x.to(device) for x in (b_idx, k_idx, tgt, tmask))
    tok_lp = logits[b_idx, k_idx, tgt] - lse[b_idx, k_idx]
    return scorer.reduce(tok_lp, tmask).view(B, C)
