"""Tiny randomly initialised LMs (T5, Llama, GPT-2 shapes) with a locally trained tokenizer: no download, so
tests and the demo preset run anywhere. Deterministic for a seed."""

from __future__ import annotations

import torch

TINY_KINDS = ("t5", "llama", "gpt2")


def _tiny_corpus(vocab_texts) -> list[str]:
    """Text the tiny tokenizer is trained on: real prompts of every task and domain over synthetic titles."""
    from delrec.data.synthetic import GENRES, NOUNS
    from delrec.prompts import templates

    titles = [f"{w} {n} {p}" for ws in GENRES.values() for w in ws for n in NOUNS for p in range(1, 5)]
    titles += [f"{t} ({1990 + i % 30})" for i, t in enumerate(titles)]
    corpus = list(titles)
    for d, domain in enumerate(templates.DOMAINS):
        for letters in (False, True):
            c = titles[d * 20:d * 20 + 20]
            h = titles[200 + d * 10:210 + d * 10]
            corpus.append(templates.render_ta(domain, "SASRec", h[:4], h[3:], c[0], c, letters))
            corpus.append(templates.render_rps(domain, "GRU4Rec", h, c[1:10], c, letters))
            corpus.append(templates.render_lsr(domain, "Caser", h, c, letters, hint=c[:5]))
    # " A" .. " Z" must be single tokens for the index-letter scorer ("... is candidate C").
    corpus += [" ".join(f"is candidate {c}" for c in templates.LETTERS)] * 8
    return corpus + [str(t) for t in vocab_texts]


def tiny_tokenizer(kind: str, vocab_texts=(), vocab_size: int = 1200):
    """A byte-level BPE tokenizer trained locally (no download); byte fallback means no text is ever unknown."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    # T5 convention: pad=0 doubles as decoder start, eos=1 closes every input and target.
    specials = {"t5": ["<pad>", "</s>", "<unk>"], "llama": ["<unk>", "<s>", "</s>", "<pad>"],
                "gpt2": ["<|endoftext|>"]}[kind]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_tiny_corpus(vocab_texts), trainer)
    if kind == "t5":
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    if kind == "llama":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                       bos_token="<s>", unk_token="<unk>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", unk_token="<|endoftext|>")


def tiny_config(kind: str, vocab_size: int):
    from transformers import GPT2Config, LlamaConfig, T5Config

    if kind == "t5":
        return T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                        num_heads=4, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
                        decoder_start_token_id=0, dropout_rate=0.0)
    # A larger initializer_range than the default 0.02 makes a random model's outputs depend visibly on its
    # input, so tests comparing two computations of the same scores cannot pass on near-constant logits.
    if kind == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                           initializer_range=0.3, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    return GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=2048,
                      initializer_range=0.3, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def tiny_model(kind: str, seed: int = 0, vocab_texts=()):
    """(model, tokenizer) of a tiny random `kind` model; seeded without disturbing the caller's global RNG."""
    from transformers import AutoModelForCausalLM, T5ForConditionalGeneration

    tokenizer = tiny_tokenizer(kind, vocab_texts)
    config = tiny_config(kind, len(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "t5":
            model = T5ForConditionalGeneration(config)
        else:
            model = AutoModelForCausalLM.from_config(config)
    return model, tokenizer
