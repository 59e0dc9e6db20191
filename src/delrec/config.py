"""Typed, validated run configuration: YAML presets plus `--set section.key=value` overrides."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from delrec import DelrecError


@dataclass
class DataConfig:
    dataset: str = "synthetic"          # ml-100k | ml-1m | steam | beauty | home-kitchen | csv | synthetic
    format: str = "auto"                # reader; auto = the dataset's usual format
    data_dir: str = ""                  # empty: $DELREC_DATA/<dataset>
    domain: str = ""                    # movie | game | beauty | home; empty = the dataset's default
    min_interactions: int = 5
    protocol: str = "leave-one-out"     # leave-one-out | user-split | predefined (the data's own split)
    max_history: int = 10
    n_candidates: int = 20
    seed: int = 42
    max_train_examples: int = 2000      # LM-stage training examples drawn from training prefixes
    train_examples_per_user: int = 1
    max_eval_examples: int = 0          # 0 = all; >0 subsamples valid/test for quick runs (seeded)
    allow_pickle: bool = False          # LLaRA .df files are pickles: reading them executes code
    columns: dict = field(default_factory=dict)  # csv reader: user/item/timestamp/title column names
    delimiter: str = ""                 # csv reader; empty = by extension
    synthetic_users: int = 300
    synthetic_items: int = 120

    def validate(self) -> None:
        _choice("data.protocol", self.protocol, ("leave-one-out", "user-split", "predefined"))
        _positive("data.n_candidates", self.n_candidates, minimum=2)
        _positive("data.max_history", self.max_history)
        _positive("data.min_interactions", self.min_interactions)


@dataclass
class TeacherConfig:
    models: list = field(default_factory=lambda: ["sasrec"])  # trained and reported; the first one is distilled
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    max_len: int = 50
    pre_norm: bool = False
    caser_window: int = 5               # Caser: last L items convolved (the paper's L)
    caser_h: int = 16                   # Caser: horizontal filters per height 1..L
    caser_v: int = 4                    # Caser: vertical filters
    loss: str = "ce"                    # ce (full softmax) | bce (one sampled negative)
    epochs: int = 200
    batch_size: int = 64                # training windows per step (each holds up to max_len targets)
    train_stride: int = 0               # 0 = max_len // 2; 1 = one window per prefix (RecBole's scheme)
    lr: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 5                   # epochs without a better validation NDCG@10
    topk: int = 10
    device: str = "auto"

    def validate(self) -> None:
        for m in self.models:
            _choice("teacher.models", m, ("sasrec", "gru4rec", "caser"))
        if not self.models:
            raise DelrecError("teacher.models: at least one teacher is needed")
        _choice("teacher.loss", self.loss, ("ce", "bce"))
        _positive("teacher.topk", self.topk)


@dataclass
class LMConfig:
    backbone: str = "tiny-random-t5"    # hub id | local folder | smollm2-offline | tiny-random-{t5,llama,gpt2}
    dtype: str = "fp32"                 # fp32 | bf16 | fp16
    device: str = "auto"
    autocast_bf16: bool = False         # bf16 autocast over fp32 weights (AMX on CPU)
    n_soft: int = 100
    soft_init: str = "vocab"            # vocab | normal
    scorer: str = "title-likelihood"    # title-likelihood | first-token | index-letter
    length_norm: str = "mean"           # mean | sum (title-likelihood)
    list_candidates: bool = True        # list the candidates in the prompt (index-letter always does)
    max_title_tokens: int = 24
    max_prompt_tokens: int = 1024
    chunk_rows: int = 16                # title-likelihood: (prompt, title) rows per continuation pass; 0 = all
    candidate_pass: str = "auto"        # title-likelihood: auto (packed for decoder-only, cached for T5) | packed | cached
    cache_dir: str = ""                 # where converted offline models live; empty = ~/.cache/delrec

    def validate(self) -> None:
        _choice("lm.dtype", self.dtype, ("fp32", "bf16", "fp16"))
        _choice("lm.soft_init", self.soft_init, ("vocab", "normal"))
        _choice("lm.scorer", self.scorer, ("title-likelihood", "first-token", "index-letter"))
        _choice("lm.length_norm", self.length_norm, ("mean", "sum"))
        _positive("lm.n_soft", self.n_soft, minimum=0)
        _positive("lm.chunk_rows", self.chunk_rows, minimum=0)
        _choice("lm.candidate_pass", self.candidate_pass, ("auto", "packed", "cached"))


@dataclass
class StageConfig:
    """Shared by stage 1 and stage 2; each section has its own defaults."""

    steps: int = 200
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 5e-3
    weight_decay: float = 1e-5
    warmup: int = 20
    optimizer: str = "adamw"            # adamw | lion
    max_grad_norm: float = 1.0
    eval_every: int = 50
    patience: int = 4                   # evaluations without improvement before stopping
    checkpoint_minutes: float = 10.0    # also checkpoint between validations once this much time has passed
    max_eval_examples: int = 200        # validation subset used for model selection
    alpha: float = 0.5                  # stage 1: gradient-norm weighting exponent
    init_r: int = 16                    # stage 2: AdaLoRA
    target_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    tinit: int = 0
    tfinal: int = 0
    deltaT: int = 1
    orth_reg_weight: float = 0.5
    # Training cost levers (benchmarks/train_speed.py measures each); validation and test always score all
    # candidates with the full model.
    train_negatives: int = 0            # >0: each training example scores its target + this many of its negatives
    train_layers: int = 0               # stage 2: adapt only the top N blocks (0 = all; decoder-only LMs)
    cache_lower: bool = True            # stage 2 with train_layers: compute the frozen lower blocks once per example
    enabled: bool = True

    def validate(self, name: str = "stage") -> None:
        _choice(f"{name}.optimizer", self.optimizer, ("adamw", "lion"))
        _positive(f"{name}.steps", self.steps)
        _positive(f"{name}.batch_size", self.batch_size)
        _positive(f"{name}.grad_accum", self.grad_accum)
        if self.checkpoint_minutes < 0:
            raise DelrecError(f"{name}.checkpoint_minutes must be >= 0, got {self.checkpoint_minutes}")
        _positive(f"{name}.train_negatives", self.train_negatives, minimum=0)
        _positive(f"{name}.train_layers", self.train_layers, minimum=0)
        if self.warmup > self.steps:
            raise DelrecError(f"{name}.warmup ({self.warmup}) must not exceed {name}.steps ({self.steps})")


def _stage2_defaults() -> StageConfig:
    return StageConfig(steps=300, lr=1e-3, weight_decay=1e-6, warmup=30)


@dataclass
class EvalConfig:
    methods: list = field(default_factory=lambda: ["popularity", "teachers", "lm-zero-shot", "lsr-only", "delrec"])
    ablations: bool = False             # also delrec-no-ta and delrec-no-rps
    teacher_hint: bool = False          # beyond the paper: row delrec+hint
    hint_k: int = 5                     # delrec+hint: the teacher's top k of the example's own candidates
    order_robust: bool = False          # score under two candidate orders and average
    batch_size: int = 8
    bootstrap: int = 1000

    def validate(self) -> None:
        known = ("popularity", "teachers", "lm-zero-shot", "lsr-only", "delrec", "delrec-no-ta", "delrec-no-rps")
        for m in self.methods:
            _choice("eval.methods", m, known)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=_stage2_defaults)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    out: str = "runs/default"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        self.data.validate()
        self.teacher.validate()
        self.lm.validate()
        self.stage1.validate("stage1")
        self.stage2.validate("stage2")
        self.eval.validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path) -> None:
        from delrec.io import atomic_write_text
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _choice(key, value, options):
    if value not in options:
        raise DelrecError(f"{key}: {value!r} is not one of {', '.join(map(str, options))}")


def _positive(key, value, minimum=1):
    if value < minimum:
        raise DelrecError(f"{key}: must be >= {minimum}, got {value}")


def _coerce(key: str, value, typ):
    """Check (and for CLI strings, parse) `value` against the annotated type `typ`."""
    origin = typing.get_origin(typ) or typ
    if isinstance(value, str) and origin is not str:
        try:  # YAML reads "5e-3" as a string; numbers from the CLI must still parse
            value = origin(value) if origin in (int, float) else yaml.safe_load(value)
        except ValueError:
            raise DelrecError(f"{key}: expected {origin.__name__}, got {value!r}") from None
    if origin is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin in (list, dict) and isinstance(value, origin):
        return value
    if origin is bool and not isinstance(value, bool):
        raise DelrecError(f"{key}: expected true/false, got {value!r}")
    if origin in (int, float, str) and (not isinstance(value, origin) or isinstance(value, bool)):
        raise DelrecError(f"{key}: expected {origin.__name__}, got {value!r}")
    if origin in (list, dict) and not isinstance(value, origin):
        raise DelrecError(f"{key}: expected a {origin.__name__}, got {value!r}")
    return value


def _build(cls, values: dict, prefix: str):
    if not isinstance(values, dict):
        raise DelrecError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in known:
            raise DelrecError(f"unknown config key {full!r}; known: {', '.join(sorted(known))}")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = _build(typ, value or {}, full + ".")
        else:
            kwargs[key] = _coerce(full, value, typ)
    if cls is RunConfig:
        return cls(**kwargs)
    obj = cls(**kwargs) if cls is not StageConfig or prefix != "stage2." else _stage2_with(kwargs)
    return obj


def _stage2_with(kwargs: dict) -> StageConfig:
    base = dataclasses.asdict(_stage2_defaults())
    base.update(kwargs)
    return StageConfig(**base)


def _set_path(tree: dict, dotted: str, value: str) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise DelrecError(f"--set {dotted}: {p!r} is not a section")
    node[parts[-1]] = value


def load_config(path: str | None = None, overrides: list[str] | tuple = ()) -> RunConfig:
    """Read a YAML preset (or defaults) and apply `section.key=value` overrides; validate everything."""
    tree: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise DelrecError(f"config file not found: {p}")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise DelrecError(f"{p}: invalid YAML ({e})".replace("\n", " ")) from None
    for item in overrides:
        if "=" not in item:
            raise DelrecError(f"--set {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        _set_path(tree, key.strip(), value)
    return _build(RunConfig, tree, "")

