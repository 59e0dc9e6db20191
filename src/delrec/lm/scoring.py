"""Score an example's candidates with the LM (docs/method.md §4): one float per candidate, higher = better.

Scorers:
- `title-likelihood`: mean (or sum) log-probability of the candidate title's tokens as the answer.
  One pass over the B prompts builds a key/value cache (decoder-only: the prompt; encoder-decoder: one
  encoder pass plus the decoder's start step, which also projects the encoder output into every layer's
  cross-attention keys/values once per prompt). The B*C (prompt, title) rows then run as continuations of
  that cache (not C full passes), in chunks of `chunk_rows` rows sorted by title length, each chunk
  gathering its prompts' cache rows. Measured on CPU (SmolLM2, 8 x 20): chunks of 16 are ~2x faster than
  one pass over all 160 rows and need a seventh of the memory (less padding, 16 cache rows, not 160).
  Decoder-only LMs use the packed pass instead (`lm/packed.py`, `candidate_pass=auto|packed`): the prompt and
  all its titles in one forward pass under a block attention mask, the same numbers without copying caches.
- `first-token`: log-probability of each title's first token at the answer position (one pass).
- `index-letter`: log-probability of the candidate's letter (" A" .. " Z") at the answer position (one pass).
  The letter's logit minus the row's log-sum-exp: the same ranking and the same cross-entropy as the raw
  logit, on the same scale as the other scorers.

Conventions (why):
- A candidate's tokens are those the tokenizer produces for it *after* the prompt's last word ("is Title"
  minus "is"), so byte-level BPE (" Title" -> "ĠTitle") and SentencePiece ("▁Title") both get the leading
  space they would see in running text. T5 targets are tokenised alone, as T5 targets always are.
- EOS is appended to titles for encoder-decoder models only: a T5 target always ends in </s>, so "</s>" after
  the title is what separates "Toy Story" from "Toy Story 2". A plain-text decoder prompt is not followed by
  EOS in running text, so scoring one there would add noise (override with `append_eos`).
- Decoder-only prompts are left-padded, so the answer position is the last column for every row, with
  explicit position_ids (cumulative attention mask) so padding never shifts positions: a row's scores do not
  depend on the rest of the batch. Encoder inputs are right-padded (T5 positions are relative).
- A prompt longer than `max_prompt_tokens` (soft vectors included) is cut from the left of its body, the
  tokens right after the instruction line (which holds the soft prompt) and its special tokens, with a
  warning: the oldest history goes first, the candidates and the answer slot at the end stay.
- The model is reached only through generic calls, so a peft (AdaLoRA) wrapper works unchanged and its
  adapter weights receive gradients, as does the soft prompt.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import nullcontext

import torch

from delrec import DelrecError
from delrec.config import check_scoring
from delrec.lm.backbone import forward_params
from delrec.prompts.templates import ITEM, LETTERS, SOFT

_PROBE = "is"  # templates end with "... is" / "... is candidate"; titles are tokenised as its continuation


def _out_cache(out):
    cache = getattr(out, "cache", None)  # transformers >= 5.2x renamed past_key_values to cache
    return cache if cache is not None else out.past_key_values


def _forkable(cache) -> bool:
    """Whether `_fork_cache` is safe: every layer is a plain dynamic layer, whose update and
    batch_select_indices replace its tensors (torch.cat, indexing) instead of writing into them. Other
    caches (static, quantised, ...) are continued once, in place, over all rows."""
    from transformers import cache_utils

    plain = tuple(getattr(cache_utils, n) for n in ("DynamicLayer", "DynamicSlidingWindowLayer")
                  if hasattr(cache_utils, n))
    subs = [cache.self_attention_cache, cache.cross_attention_cache] if hasattr(cache, "cross_attention_cache") \
        else [cache]
    return all(hasattr(c, "layers") and all(type(la) in plain for la in c.layers) for c in subs)


def _fork_cache(cache):
    """A copy of a (forkable) cache sharing its tensors: re-indexing or extending the copy leaves the
    original intact, so each chunk of candidates can start again from the prompts' cache."""
    new = copy.copy(cache)
    if hasattr(cache, "cross_attention_cache"):  # EncoderDecoderCache
        new.self_attention_cache = _fork_cache(cache.self_attention_cache)
        new.cross_attention_cache = _fork_cache(cache.cross_attention_cache)
        new.is_updated = dict(cache.is_updated)
    else:
        new.layers = [copy.copy(layer) for layer in cache.layers]
    return new


class CandidateScorer:
    def __init__(self, backbone, kind: str = "title-likelihood", length_norm: str = "mean",
                 max_title_tokens: int = 24, max_prompt_tokens: int = 1024, autocast_bf16: bool = False,
                 append_eos: bool | None = None, chunk_rows: int = 16, candidate_pass: str = "auto"):
        check_scoring(kind, length_norm, candidate_pass)  # the model-dependent check follows below
        self.backbone, self.kind, self.length_norm = backbone, kind, length_norm
        self.max_title_tokens, self.max_prompt_tokens = max_title_tokens, max_prompt_tokens
        self.autocast_bf16, self.chunk_rows = autocast_bf16, chunk_rows
        self.enc_dec = backbone.is_encoder_decoder
        if candidate_pass == "packed" and self.enc_dec:
            raise DelrecError("lm.candidate_pass: packed needs a decoder-only LM; use auto or cached")
        # auto = packed for decoder-only LMs (lm/packed.py): 1.5x (scoring) to 2.0x (training) faster than cached on CPU
        self.candidate_pass = candidate_pass
        self.append_eos = self.enc_dec if append_eos is None else append_eos
        tok = self.tok = backbone.tokenizer
        self.eos_id = tok.eos_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (self.eos_id or 0)
        if self.append_eos and self.eos_id is None:
            raise DelrecError(f"scorer: {backbone.name} has no EOS token; use append_eos=False")
        # Special tokens the tokenizer wraps a text in (Llama BOS in front, T5 </s> behind), found by
        # tokenising a probe with and without them; prompts are tokenised in pieces and re-wrapped.
        plain, full = self._encode("x"), tok("x")["input_ids"]
        at = next((i for i in range(len(full)) if full[i:i + len(plain)] == plain), 0)
        self.prefix, self.suffix = full[:at], full[at + len(plain):]
        if self.enc_dec:
            cfg = backbone.model.config
            self.start_id = cfg.decoder_start_token_id if cfg.decoder_start_token_id is not None else self.pad_id
        self._titles: dict[str, list[int]] = {}
        self._letters: list[int] | None = None
        self._warned = False
        self._n_soft = 0

    # ------------------------------------------------------------------ tokenisation
    def _encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _encode_slots(self, text: str) -> list[int]:
        """Token ids with SLOT where each ITEM marker was (delrec+hybrid); the space before a marker belongs to
        the slot, as for the soft prompt."""
        if ITEM not in text:
            return self._encode(text)
        pieces = text.split(ITEM)
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            ids += self._encode(piece.rstrip(" ") if i < len(pieces) - 1 else piece)
            if i < len(pieces) - 1:
                ids.append(SLOT)
        return ids

    def _answer_ids(self, text: str) -> list[int]:
        if self.enc_dec:
            return self._encode(text)
        base, ids = self._encode(_PROBE), self._encode(f"{_PROBE} {text}")
        return ids[len(base):] if ids[:len(base)] == base else self._encode(" " + text)

    def title_ids(self, title: str) -> list[int]:
        if title not in self._titles:
            ids = self._answer_ids(title)[:self.max_title_tokens]
            if not ids:
                raise DelrecError(f"scorer: candidate title {title!r} has no tokens")
            if len(self._titles) > 200_000:  # bound the memo on huge catalogues
                self._titles.clear()
            self._titles[title] = ids + ([self.eos_id] if self.append_eos else [])
        return self._titles[title]

    def letter_ids(self) -> list[int]:
        if self._letters is None:
            ids = [self._answer_ids(c)[0] for c in LETTERS]
            if len(set(ids)) != len(ids):
                raise DelrecError(f"scorer: the tokenizer of {self.backbone.name} does not give the letters A-Z "
                                  f"distinct first tokens; use lm.scorer=title-likelihood")
            self._letters = ids
        return self._letters

    def prepare(self, prompt: str, use_soft: bool) -> tuple[list[int], int | None]:
        """Token ids of a prompt and the index before which the soft vectors go (None: no soft prompt)."""
        count = prompt.count(SOFT)
        if count > 1:
            raise DelrecError(f"scorer: a prompt holds the soft-prompt marker {SOFT} {count} times (at most once)")
        if not use_soft or count == 0:
            text = prompt.replace(SOFT, "")
            ids, soft_at = self.prefix + self._encode_slots(text) + self.suffix, None
            head = text.split("\n", 1)[0] + "\n" if "\n" in text else ""
            protect = len(self.prefix) + (len(self._encode(head)) if head else 0)
        else:
            before, after = prompt.split(SOFT)
            # The space before the marker belongs to the soft slot, not to a lone "Ġ" token.
            head_ids = self.prefix + self._encode(before.rstrip(" "))
            ids, soft_at = head_ids + self._encode_slots(after) + self.suffix, len(head_ids)
            rest = after.split("\n", 1)[0] + "\n" if "\n" in after else ""
            protect = soft_at + (len(self._encode(rest)) if rest else 0)
        return self._truncate(ids, soft_at, protect)

    def prepare_all(self, prompts: list[str], soft_prompt) -> list[tuple[list[int], int | None]]:
        """`prepare` for every prompt; truncation reserves room for this soft prompt's vectors."""
        self._n_soft = soft_prompt.n_soft if soft_prompt is not None else 0
        return [self.prepare(p, soft_prompt is not None) for p in prompts]

    def _truncate(self, ids, soft_at, protect):
        n_soft = self._n_soft if soft_at is not None else 0
        excess = len(ids) + n_soft - self.max_prompt_tokens
        if excess <= 0:
            return ids, soft_at
        if protect + excess + len(self.suffix) + 8 > len(ids):  # nothing sensible left to cut
            raise DelrecError(f"scorer: a prompt needs {len(ids) + n_soft} tokens, more than "
                              f"lm.max_prompt_tokens={self.max_prompt_tokens} even after cutting its history")
        if not self._warned:
            warnings.warn(f"scorer: prompt(s) longer than lm.max_prompt_tokens={self.max_prompt_tokens}; the "
                          f"oldest history is cut, the instruction line is kept", stacklevel=3)
            self._warned = True
        return ids[:protect] + ids[protect + excess:], soft_at

    # ------------------------------------------------------------------ batching
    def embed(self, prepared, soft, left_pad: bool):
        """inputs_embeds [B, L, D], attention mask [B, L], position ids [B, L] and true lengths [B]."""
        emb = self.backbone.input_embeddings()
        device = emb.weight.device
        width = max(len(ids) for ids, _ in prepared)
        ids = torch.tensor([[self.pad_id if t == SLOT else t for t in i] + [self.pad_id] * (width - len(i))
                            for i, _ in prepared], device=device)
        table = emb(ids)  # one embedding call for the whole batch
        per_row = hasattr(soft, "row_weight")  # lm/soft_prompt.py PerRowSoft: a tensor per row
        sv = soft.weight.to(device=device, dtype=table.dtype) if soft is not None and not per_row else None
        rows = []
        for b, (tok_ids, at) in enumerate(prepared):
            row = table[b, :len(tok_ids)]
            if SLOT in tok_ids:
                row = _fill_slots(row, tok_ids, soft, b)
            if at is not None:
                v = soft.row_weight(b).to(device=device, dtype=table.dtype) if per_row else sv
                row = torch.cat([row[:at], v, row[at:]])
            rows.append(row)
        embeds, mask, pos = pad_rows(rows, left_pad)
        return embeds, mask, pos, torch.tensor([len(r) for r in rows], device=device)

    def _pad(self, ids, device):
        """Right-padded token ids [N, T] and their mask."""
        T = max(len(i) for i in ids)
        tgt = torch.tensor([i + [self.pad_id] * (T - len(i)) for i in ids], device=device)
        mask = torch.tensor([[1] * len(i) + [0] * (T - len(i)) for i in ids], device=device)
        return tgt, mask

    @staticmethod
    def _token_logprobs(logits, tgt):
        logits = logits.float()
        return logits.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)

    def reduce(self, tok_lp, mask):
        """Per-row mean/sum of token log-probs [N, T] under mask [N, T]."""
        maskf = mask.to(tok_lp.dtype)
        total = (tok_lp * maskf).sum(1)
        if self.length_norm == "mean":
            total = total / maskf.sum(1)
        return total

    def autocast(self):
        if not self.autocast_bf16:
            return nullcontext()
        return torch.autocast(device_type=self.backbone.device.type, dtype=torch.bfloat16)

    # ------------------------------------------------------------------ scoring
    def score(self, prompts: list[str], candidates: list[list[str]], soft_prompt=None) -> torch.Tensor:
        """Scores [B, C] (float32), differentiable w.r.t. the soft prompt and any trainable adapters.

        The soft prompt goes where a prompt holds `SOFT`; a prompt without the marker gets none. With
        soft_prompt=None the marker is removed from the text."""
        if len(prompts) != len(candidates) or not prompts:
            raise DelrecError(f"scorer: {len(prompts)} prompts but {len(candidates)} candidate lists")
        C = len(candidates[0])
        if C == 0 or any(len(c) != C for c in candidates):
            raise DelrecError("scorer: every prompt needs the same, non-zero number of candidates")
        if soft_prompt is not None:
            soft_prompt.check(self.backbone)
        prepared = self.prepare_all(prompts, soft_prompt)
        with self.autocast():
            if self.enc_dec:
                return self._score_seq2seq(prepared, candidates, soft_prompt, C)
            return self._score_decoder(prepared, candidates, soft_prompt, C)

    def first_position_scores(self, logits, candidates, B, C):
        """first-token / index-letter from the answer position's logits [B, V]."""
        lp = torch.log_softmax(logits.float(), -1)
        if self.kind == "index-letter":
            if C > len(LETTERS):
                raise DelrecError(f"scorer: index-letter supports at most {len(LETTERS)} candidates, got {C}")
            return lp[:, torch.tensor(self.letter_ids()[:C], device=lp.device)]
        first = torch.tensor([[self.title_ids(t)[0] for t in cands] for cands in candidates], device=lp.device)
        return lp.gather(1, first)

    def _continue(self, first, candidates, C, cache, run):
        """title-likelihood from the answer position's logits `first` [B, V] and the prompts' cache [B rows].

        The B*C (prompt, title) rows are sorted by title length and continued in chunks of `chunk_rows`:
        each chunk gathers the cache rows of its prompts and pads only to its own longest title, which
        trims padding and bounds the memory of the gathered cache. `run(ids, mask, prompt_of, cache)`
        continues `cache` (one row per chunk row) over title tokens."""
        B = first.shape[0]
        ids = [self.title_ids(t) for cands in candidates for t in cands]  # row r = prompt r // C
        first_lp = torch.log_softmax(first.float(), -1)
        order = sorted(range(len(ids)), key=lambda r: -len(ids[r]))
        forkable = _forkable(cache)
        step = self.chunk_rows if self.chunk_rows > 0 and forkable else len(ids)
        parts = []
        for lo in range(0, len(ids), step):
            rows = order[lo:lo + step]
            tgt, tmask = self._pad([ids[r] for r in rows], first.device)
            prompt_of = torch.tensor([r // C for r in rows], device=first.device)
            tok_lp = first_lp[prompt_of].gather(1, tgt[:, :1])
            if tgt.shape[1] > 1:  # the last title token predicts nothing we score: it is never fed in
                sub = _fork_cache(cache) if forkable else cache
                sub.batch_select_indices(prompt_of)  # replaces the fork's tensors; the original is kept
                logits = run(tgt[:, :-1], tmask[:, :-1], prompt_of, sub)
                tok_lp = torch.cat([tok_lp, self._token_logprobs(logits, tgt[:, 1:])], 1)
            parts.append(self.reduce(tok_lp, tmask))
        inverse = torch.empty(len(ids), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(ids))
        return torch.cat(parts)[inverse.to(first.device)].view(B, C)

    def _score_seq2seq(self, prepared, candidates, soft, C):
        from transformers.modeling_outputs import BaseModelOutput

        model, B = self.backbone.model, len(prepared)
        cache_kw = "cache" if "cache" in forward_params(model) else "past_key_values"
        embeds, mask, _, _ = self.embed(prepared, soft, left_pad=False)
        hidden = model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        start = torch.full((B, 1), self.start_id, device=embeds.device)
        cont = self.kind == "title-likelihood"
        # The decoder's first step also projects the encoder output into every layer's cross-attention
        # keys/values, once per prompt; the cache then carries them to all C candidates, so no candidate
        # recomputes them (they cost more than the encoder itself at 20 candidates).
        out = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=mask,
                    decoder_input_ids=start, use_cache=cont)
        if not cont:
            return self.first_position_scores(out.logits[:, 0], candidates, B, C)

        def run(ids, tmask, prompt_of, cache):
            dec_mask = torch.cat([torch.ones_like(tmask[:, :1]), tmask], 1)  # start token + titles
            return model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden[prompt_of]),
                         attention_mask=mask[prompt_of], decoder_input_ids=ids, decoder_attention_mask=dec_mask,
                         use_cache=True, **{cache_kw: cache}).logits
        return self._continue(out.logits[:, 0], candidates, C, _out_cache(out), run)

    def _use_packed(self) -> bool:
        return self.candidate_pass == "packed" or (self.candidate_pass == "auto" and not self.enc_dec)

    def _score_decoder(self, prepared, candidates, soft, C):
        if self.kind == "title-likelihood" and self._use_packed():
            from delrec.lm.packed import packed_title_scores

            return packed_title_scores(self, prepared, candidates, soft)
        model, B = self.backbone.model, len(prepared)
        params = forward_params(model)
        cache_kw = "cache" if "cache" in params else "past_key_values"
        keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}  # skip logits for all prompt tokens
        embeds, mask, pos, lengths = self.embed(prepared, soft, left_pad=True)
        cont = self.kind == "title-likelihood"
        out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=cont, **keep)
        last = out.logits[:, -1]  # left padding: the answer position is the last column of every row
        if not cont:
            return self.first_position_scores(last, candidates, B, C)

        def run(ids, tmask, prompt_of, cache):
            # Positions continue each row's true prompt length, whatever its left padding.
            pos = lengths[prompt_of].unsqueeze(1) + torch.arange(ids.shape[1], device=ids.device)
            return model(input_ids=ids, attention_mask=torch.cat([mask[prompt_of], tmask], 1), position_ids=pos,
                         use_cache=True, **{cache_kw: cache}).logits
        return self._continue(last, candidates, C, _out_cache(out), run)

    # ------------------------------------------------------------------ slow reference
    def reference(self, prompts: list[str], candidates: list[list[str]], soft_prompt=None) -> torch.Tensor:
        """title-likelihood the slow way: one full, unpadded forward pass per (prompt, candidate)."""
        model = self.backbone.model
        if soft_prompt is not None:
            soft_prompt.check(self.backbone)
        rows = []
        with self.autocast():
            for prompt, cands in zip(prompts, candidates):
                prepared = self.prepare_all([prompt], soft_prompt)
                embeds, mask, _, _ = self.embed(prepared, soft_prompt, left_pad=True)
                row = []
                for title in cands:
                    tgt = torch.tensor([self.title_ids(title)], device=embeds.device)
                    if self.enc_dec:
                        dec_in = torch.cat([torch.full_like(tgt[:, :1], self.start_id), tgt[:, :-1]], 1)
                        logits = model(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=dec_in,
                                       use_cache=False).logits
                    else:
                        full = torch.cat([embeds, self.backbone.input_embeddings()(tgt)], 1)
                        logits = model(inputs_embeds=full, attention_mask=torch.ones_like(full[..., 0]),
                                       use_cache=False).logits[:, embeds.shape[1] - 1:-1]
                    row.append(self.reduce(self._token_logprobs(logits, tgt), torch.ones_like(tgt))[0])
                rows.append(torch.stack(row))
        return torch.stack(rows)


SLOT = -1  # an ITEM marker's place in prepared token ids (never a real token id)


def _fill_slots(row: torch.Tensor, tok_ids: list[int], soft, b: int) -> torch.Tensor:
    """Row b's embeddings with its slot vectors where the SLOT ids are. A prompt cut to lm.max_prompt_tokens
    loses its oldest history first, so the k slots left take the last k vectors. Without vectors (a plain
    soft prompt: delrec+hybrid's lower blocks at projector_at=upper) a slot holds zeros."""
    at = [j for j, t in enumerate(tok_ids) if t == SLOT]
    vectors = soft.slot_inputs(b) if hasattr(soft, "slot_inputs") else None
    if vectors is None:
        vectors = row.new_zeros(len(at), row.shape[-1])
    elif len(vectors) < len(at):
        raise DelrecError(f"scorer: a prompt holds {len(at)} item slots but its example has {len(vectors)} items")
    index = torch.tensor(at, device=row.device)
    return row.index_put((index,), vectors[len(vectors) - len(at):].to(row))


def slot_positions(tok_ids: list[int], soft_at: int | None, n_soft: int) -> list[int]:
    """Where a prompt's slots sit in its embedded row (after the soft vectors are spliced in)."""
    return [j + (n_soft if soft_at is not None and j >= soft_at else 0) for j, t in enumerate(tok_ids) if t == SLOT]


def pad_rows(rows: list[torch.Tensor], left_pad: bool):
    """Rows [S_b, D] into one batch: embeds [B, L, D] (the rows' dtype), attention mask and position ids [B, L]
    counting each row's own tokens from 0, whichever side the padding is on."""
    L = max(len(r) for r in rows)
    embeds = rows[0].new_zeros(len(rows), L, rows[0].shape[-1])
    mask = torch.zeros(len(rows), L, dtype=torch.long, device=rows[0].device)
    for b, r in enumerate(rows):
        sl = slice(L - len(r), L) if left_pad else slice(0, len(r))
        embeds[b, sl] = r  # in-place copies into a fresh tensor stay differentiable w.r.t. r
        mask[b, sl] = 1
    return embeds, mask, (mask.cumsum(1) - 1).clamp(min=0)


def reference_title_likelihood(backbone, prompts: list[str], candidates: list[list[str]], soft_prompt=None, *,
                               length_norm: str = "mean", max_title_tokens: int = 24,
                               max_prompt_tokens: int = 1024, autocast_bf16: bool = False,
                               append_eos: bool | None = None) -> torch.Tensor:
    """The naive title-likelihood (one full pass per candidate) that tests and the benchmark compare against."""
    scorer = CandidateScorer(backbone, "title-likelihood", length_norm, max_title_tokens, max_prompt_tokens,
                             autocast_bf16, append_eos)
    return scorer.reference(prompts, candidates, soft_prompt)


def scorer_from_config(backbone, cfg) -> CandidateScorer:
    """A scorer configured by an LMConfig (invalid values are refused here, naming the lm.* key)."""
    return CandidateScorer(backbone, cfg.scorer, cfg.length_norm, cfg.max_title_tokens, cfg.max_prompt_tokens,
                           cfg.autocast_bf16, chunk_rows=cfg.chunk_rows, candidate_pass=cfg.candidate_pass)
