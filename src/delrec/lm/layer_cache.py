"""A decoder-only LM run in two parts: the frozen lower layers once per example, the adapted top layers per step.

With `stage2.train_layers = N`, AdaLoRA adapts only the top N blocks. The soft prompt is frozen in stage 2,
so the hidden states that enter block `L - N` are a fixed function of an example's packed row (prompt and
candidate titles, lm/packed.py): they are computed once, without autograd, stored in bf16, and every later
pass over that example (training epochs and validation) runs only the top N blocks. A title block of a
packed row sees the prompt and its own earlier tokens only, so the stored per-title states also serve any
subset of the candidates (sampled negatives, `stage2.train_negatives`). The one-position heads
(`lm.scorer=index-letter` or `first-token`) read only the prompt's last position, so for them a cached row
is the prompt alone and the upper pass is one ordinary left-padded forward of the top N blocks.

The split works through the model's own forward: a pre-hook on the first adapted block stops the lower pass
(and returns its input), and for the upper pass the block list is cut to the top N with a pre-hook that
feeds the stored states to its first block. Rotary position embeddings are computed from the position ids
at the model level, as in the full pass. Supported: models whose blocks live in one `ModuleList` named
`layers` (Llama, Qwen, SmolLM, Mistral, Gemma) or `h` (GPT-2) and take the hidden states as their first
argument; anything else raises a DelrecError naming `stage2.cache_lower`.
"""

from __future__ import annotations

import torch

from delrec import DelrecError, dist
from delrec.lm.blocks import lower_states, n_blocks

SHARE_CHUNK = 1 << 28  # bytes per broadcast: gloo copes badly with single multi-GB messages


class LowerStateCache:
    """Per-example lower-layer states of a packed row: the prompt's [lp, D] and each title's [n - 1, D]."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16):
        self.dtype = dtype
        self.rows: dict[object, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}

    def titles(self, key) -> dict[str, torch.Tensor]:
        return self.rows.get(key, (None, {}))[1]

    def add(self, key, prompt: torch.Tensor, titles: dict[str, torch.Tensor], *, owned: bool = False) -> None:
        """Store new title states; a prompt's own states do not depend on the titles after it, so its
        first stored copy is kept and entries already held are not converted again. Slices of a batch are
        copied (a view would keep the whole batch alive); `owned` tensors (read from a file) are not."""
        own = (lambda t: t.detach().to(self.dtype)) if owned else (lambda t: t.detach().to(self.dtype).clone())
        if key not in self.rows:
            self.rows[key] = (own(prompt), {})
        self.rows[key][1].update({t: own(s) for t, s in titles.items()})

    def get(self, key, titles: list[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        prompt, by_title = self.rows[key]
        return prompt, [by_title[t] for t in titles]


def share_across_processes(cache: LowerStateCache, keys: set) -> int:
    """Under torchrun, give every process the entries of `keys` that any process holds; returns how many
    prompts this process received. A training example goes to the process its place in the global batch
    names, which changes from epoch to epoch: without this, after the first epoch each process would run
    the lower pass again for the half of the examples the other one saw. A collective: every process calls it
    at the same step. The tensors travel as raw bytes (broadcast); only the index (texts, shapes) is pickled,
    between the run's own processes."""
    import math

    import torch.distributed as tdist

    rank, world = dist.world()
    if world == 1:
        return 0
    missing = torch.tensor([sum(k not in cache.rows for k in keys)], dtype=torch.long)
    tdist.all_reduce(missing)
    if not int(missing):
        return 0
    received = 0
    for src in range(world):
        meta: list = [None]
        if src == rank:
            own = [(k, *cache.rows[k]) for k in keys if k in cache.rows]  # any order: the index travels
            tensors = [t for _, prompt, titles in own for t in (prompt, *titles.values())]
            flat = torch.cat([t.reshape(-1) for t in tensors]) if tensors else torch.empty(0, dtype=cache.dtype)
            meta = [([[k, list(titles)] for k, _, titles in own], [list(t.shape) for t in tensors])]
            buf = flat.view(torch.uint8)
        tdist.broadcast_object_list(meta, src=src)
        index, shapes = meta[0]
        if src != rank:
            numel = sum(math.prod(sh) for sh in shapes)
            buf = torch.empty(numel * cache.dtype.itemsize, dtype=torch.uint8)
        for lo in range(0, buf.numel(), SHARE_CHUNK):
            tdist.broadcast(buf[lo:lo + SHARE_CHUNK], src=src)
        if src == rank:
            continue
        parts = iter(t.view(sh) for t, sh in zip(buf.view(cache.dtype).split([math.prod(x) for x in shapes]),
                                                  shapes))
        for key, names in index:
            received += key not in cache.rows
            prompt = next(parts)
            cache.add(key, prompt, {t: next(parts) for t in names}, owned=True)
    return received


def _add_upper(states: torch.Tensor, rows, b: int, tok_ids: list[int], soft_at: int | None) -> torch.Tensor:
    """A prompt's stored states plus row b's upper parts: per-user offsets on the soft positions, item vectors
    on the ITEM slots (the last k of the row's vectors where a cut prompt kept k slots)."""
    from delrec.lm.scoring import slot_positions

    if rows.soft_offsets is not None and soft_at is not None:
        n = rows.soft_offsets.shape[1]
        states = torch.cat([states[:soft_at], states[soft_at:soft_at + n] + rows.soft_offsets[b].to(states),
                            states[soft_at + n:]])
    if rows.slot_offsets is not None:
        at = slot_positions(tok_ids, soft_at, rows.n_soft)
        if at:
            vec = rows.slot_offsets[b]
            index = torch.tensor(at, device=states.device)
            states = states.index_add(0, index, vec[len(vec) - len(at):].to(states))
    return states


class UpperLayerScorer:
    """The scorer's scores through the top blocks only, from lower-layer states cached per (prompt, title).

    A drop-in for `CandidateScorer.score` (same arguments, same scores up to bf16 rounding of the stored
    states) for one fixed, frozen soft prompt. A prompt's states are keyed by its text; a (prompt, title)
    pair missing from the cache costs one lower pass of its prompt and the missing titles, without autograd.
    """

    def __init__(self, scorer, first_upper: int, soft_prompt=None, dtype: torch.dtype = torch.bfloat16):
        if scorer.enc_dec:
            raise DelrecError("stage2.cache_lower needs a decoder-only LM; set stage2.cache_lower=false")
        total = n_blocks(scorer.backbone.model)
        if not 0 < first_upper < total:
            raise DelrecError(f"stage2.train_layers: must leave at least one frozen block below the adapted "
                              f"ones ({total} blocks); got first adapted block {first_upper}")
        self.scorer, self.first_upper, self.soft = scorer, first_upper, soft_prompt
        self.backbone = scorer.backbone
        self.cache = LowerStateCache(dtype)
        self.lower_rows = 0  # lower-pass rows, for the throughput report: (prompt, title) pairs, or prompts

    def _check_soft(self, soft_prompt) -> None:
        if soft_prompt is not self.soft or (soft_prompt is not None and soft_prompt.weight.requires_grad):
            raise DelrecError("stage2.cache_lower: the cached states belong to one frozen soft prompt")

    @torch.no_grad()
    def prefetch(self, prompts: list[str], candidates: list[list[str]], soft_prompt=None) -> None:
        """Fill the cache for every (prompt, title) pair given that it does not hold yet."""
        from delrec.lm.packed import embedded_pieces, pack, packed_mask

        self._check_soft(soft_prompt)
        if self.one_position:
            self._prefetch_prompts([p for p in dict.fromkeys(prompts) if p not in self.cache.rows], soft_prompt)
            return
        todo: dict[str, list[str]] = {}
        for p, cands in zip(prompts, candidates):
            have = self.cache.titles(p)
            missing = [t for t in dict.fromkeys(cands) if t not in have and t not in todo.get(p, [])]
            if missing:
                todo.setdefault(p, []).extend(missing)
        if not todo:
            return
        sc, model = self.scorer, self.backbone.model
        keys = list(todo)
        width = max(len(v) for v in todo.values())  # pack() needs the same count per row: pad with repeats
        cands = [todo[k] + [todo[k][0]] * (width - len(todo[k])) for k in keys]
        prepared = sc.prepare_all(keys, soft_prompt)
        with sc.autocast():
            prompts_e, titles, pieces = embedded_pieces(sc, prepared, cands, soft_prompt)
            embeds, pos, layout, P = pack(prompts_e, pieces, titles)
            mask = packed_mask(model, layout, P, embeds.shape[1], embeds.dtype, embeds.device)
            states = lower_states(model, self.first_upper, inputs_embeds=embeds, attention_mask=mask,
                                  position_ids=pos, use_cache=False)
        for b, key in enumerate(keys):
            lp, offsets, _ = layout[b]
            new = {t: states[b, start:start + n - 1] for t, (start, n) in zip(todo[key], offsets)}
            self.lower_rows += len(new)
            self.cache.add(key, states[b, P - lp:P], new)

    @property
    def one_position(self) -> bool:
        return self.scorer.kind != "title-likelihood"

    def _prefetch_prompts(self, keys: list[str], soft_prompt) -> None:
        if not keys:
            return
        sc = self.scorer
        with sc.autocast():
            embeds, mask, pos, lengths = sc.embed(sc.prepare_all(keys, soft_prompt), soft_prompt, left_pad=True)
            states = lower_states(self.backbone.model, self.first_upper, inputs_embeds=embeds,
                                  attention_mask=mask, position_ids=pos, use_cache=False)
        L = states.shape[1]
        for b, key in enumerate(keys):
            self.cache.add(key, states[b, L - int(lengths[b]):], {})
        self.lower_rows += len(keys)

    def _score_one_position(self, prompts, candidates) -> torch.Tensor:
        """index-letter / first-token from the answer position, the prompts' stored states left-padded."""
        from delrec.lm.backbone import forward_params
        from delrec.lm.blocks import upper_only
        from delrec.lm.scoring import pad_rows

        # fp32 residual stream, as in the full pass
        embeds, mask, pos = pad_rows([self.cache.rows[p][0].float() for p in prompts], left_pad=True)
        B, model = len(prompts), self.backbone.model
        keep = {"logits_to_keep": 1} if "logits_to_keep" in forward_params(model) else {}
        with self.scorer.autocast(), upper_only(model, self.first_upper, embeds):
            last = model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False,
                         **keep).logits[:, -1]
        return self.scorer.first_position_scores(last, candidates, B, len(candidates[0]))

    def score(self, prompts: list[str], candidates: list[list[str]], soft_prompt=None) -> torch.Tensor:
        from delrec.lm.packed import scores_from_pieces

        rows = None
        if getattr(soft_prompt, "upper", False):  # delrec+user / +hybrid at eval.projector_at=upper
            rows, soft_prompt = soft_prompt, soft_prompt.prompt.base_prompt
        self.prefetch(prompts, candidates, soft_prompt)
        if self.one_position:
            if rows is not None:
                raise DelrecError("eval.projector_at=upper needs lm.scorer=title-likelihood")
            return self._score_one_position(prompts, candidates)
        prepared = self.scorer.prepare_all(prompts, soft_prompt) if rows is not None else []
        prompt_states, pieces = [], []
        for b, (p, cands) in enumerate(zip(prompts, candidates)):
            ps, ts = self.cache.get(p, list(cands))
            ps = ps.float()  # the residual stream runs in fp32, as in the full pass
            if rows is not None:  # the teacher part joins these positions' states here, differentiably
                ps = _add_upper(ps, rows, b, *prepared[b])
            prompt_states.append(ps)
            pieces.append([t.float() for t in ts])
        titles = [[self.scorer.title_ids(t) for t in cands] for cands in candidates]
        with self.scorer.autocast():
            return scores_from_pieces(self.scorer, prompt_states, pieces, titles, self.first_upper)
