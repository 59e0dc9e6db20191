"""Typed run configuration: YAML presets plus `--set section.key=value` overrides.

Each section is a dataclass that validates itself when it is created (as peft's configs do), so a bad value
fails where it is set, with a one-line `DelrecError` naming the key; `RunConfig` adds the checks that span
sections. The allowed values of choice settings live in `delrec.choices`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import ClassVar

import yaml

from delrec import DelrecError
from delrec.choices import (
    CANDIDATE_PASSES,
    DATASET_DOMAINS,
    DTYPES,
    FORMATS,
    HINT_TRAIN_TEACHERS,
    LENGTH_NORMS,
    OPTIMIZERS,
    PROJECTOR_AT,
    PROTOCOLS,
    SCORERS,
    SOFT_INITS,
    TEACHER_LOSSES,
    TEACHER_NAMES,
)
from delrec.methods import DEFAULT_METHODS, EVAL_METHODS, METHODS, run_methods
from delrec.typed_yaml import build_dataclass, read_tree


@dataclass
class DataConfig:
    dataset: str = "synthetic"          # ml-100k | ml-1m | steam | beauty | home-kitchen | csv | synthetic | ...
    format: str = "auto"                # reader; auto = the dataset's usual format
    data_dir: str = ""                  # empty: $DELREC_DATA/<dataset>
    domain: str = ""                    # movie | game | beauty | home; empty = the dataset's default
    min_interactions: int = 5
    protocol: str = "leave-one-out"     # leave-one-out | user-split | predefined (the data's own split)
    max_history: int = 10
    n_candidates: int = 20
    seed: int = 42
    max_train_examples: int = 2000      # LM-stage training examples drawn from training prefixes; 0 = all
    train_examples_per_user: int = 1
    max_eval_examples: int = 0          # 0 = all; >0 subsamples valid/test for quick runs (seeded)
    allow_pickle: bool = False          # LLaRA .df files are pickles: reading them executes code
    columns: dict = field(default_factory=dict)  # csv reader: user/item/timestamp/title column names
    delimiter: str = ""                 # csv reader; empty = by extension
    synthetic_users: int = 300
    synthetic_items: int = 120

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _known_dataset(self.dataset)
        _choice("data.format", self.format, ("auto", *FORMATS))
        _choice("data.protocol", self.protocol, PROTOCOLS)
        _positive("data.n_candidates", self.n_candidates, minimum=2)
        _positive("data.max_history", self.max_history)
        _positive("data.min_interactions", self.min_interactions)
        _positive("data.max_train_examples", self.max_train_examples, minimum=0)
        _positive("data.train_examples_per_user", self.train_examples_per_user)
        _positive("data.max_eval_examples", self.max_eval_examples, minimum=0)
        _positive("data.synthetic_users", self.synthetic_users)
        _positive("data.synthetic_items", self.synthetic_items)


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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for m in self.models:
            _choice("teacher.models", m, TEACHER_NAMES)
        if not self.models:
            raise DelrecError("teacher.models: at least one teacher is needed")
        _choice("teacher.loss", self.loss, TEACHER_LOSSES)
        _positive("teacher.topk", self.topk)
        for key in ("hidden", "heads", "layers", "max_len", "epochs", "batch_size", "patience"):
            _positive(f"teacher.{key}", getattr(self, key))
        _positive("teacher.train_stride", self.train_stride, minimum=0)
        _above_zero("teacher.lr", self.lr)
        _not_negative("teacher.weight_decay", self.weight_decay)
        _dropout("teacher.dropout", self.dropout)
        if "sasrec" in self.models and self.hidden % self.heads:
            raise DelrecError(f"teacher.hidden ({self.hidden}) must be divisible by teacher.heads "
                              f"({self.heads}) for SASRec's attention heads")


@dataclass
class LMConfig:
    backbone: str = "tiny-random-t5"    # hub id | local folder | smollm2-offline | gemma3-offline | tiny-random-*
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
    title_years: bool = True            # False: titles lose a trailing " (1995)" in prompts and scored candidates

    def __post_init__(self) -> None:
        self.validate()

    def settings(self) -> dict:
        """What goes into a stage's folder key (runs.py): keys added after run folders existed count only when
        set away from their default, so the folders of earlier runs keep their names and --resume finds them."""
        return section_settings("lm", dataclasses.asdict(self))

    def validate(self) -> None:
        _choice("lm.dtype", self.dtype, DTYPES)
        _choice("lm.soft_init", self.soft_init, SOFT_INITS)
        check_scoring(self.scorer, self.length_norm, self.candidate_pass)
        _positive("lm.n_soft", self.n_soft, minimum=0)  # 0 only without a soft prompt: see RunConfig
        _positive("lm.chunk_rows", self.chunk_rows, minimum=0)
        _positive("lm.max_title_tokens", self.max_title_tokens)
        _positive("lm.max_prompt_tokens", self.max_prompt_tokens)
        if not self.backbone.strip():
            raise DelrecError("lm.backbone: empty; use a hub id, a local model folder, smollm2-offline or "
                              "tiny-random-t5")


def check_scoring(scorer: str, length_norm: str, candidate_pass: str) -> None:
    """lm.scorer, lm.length_norm and lm.candidate_pass, checked in this one place: by LMConfig, and by a
    CandidateScorer built without one (tests, benchmarks)."""
    _choice("lm.scorer", scorer, SCORERS)
    _choice("lm.length_norm", length_norm, LENGTH_NORMS)
    _choice("lm.candidate_pass", candidate_pass, CANDIDATE_PASSES)


_UNSET = object()
# Keys added after run folders existed: in a folder key only when set away from this default.
LATER_DEFAULTS = {"lm.title_years": True, "stage1.max_history": 0}

# Where a stage keeps things, not what it computes: changing them keeps its folder and allows --resume.
LOCATION_KEYS = frozenset({"lower_states_dir"})
# How a stage computes, not what: the same numbers (up to float rounding) either way, so not in its key.
HOW_KEYS = frozenset({"pack_tasks"})


def section_settings(section: str, values: dict) -> dict:
    """A section's values (a config's, or those a checkpoint stored) reduced to what decides its result."""
    return {k: v for k, v in values.items()
            if k not in LOCATION_KEYS | HOW_KEYS and LATER_DEFAULTS.get(f"{section}.{k}", _UNSET) != v}


@dataclass
class StageConfig:
    """What both LM stages share: budget, optimiser, schedule, validation, checkpoints. `section` is the
    YAML section a subclass is read from; error messages name keys by it."""

    section: ClassVar[str] = "stage"
    steps: int = 200
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 5e-3
    weight_decay: float = 1e-5
    warmup: int = 20
    optimizer: str = "adamw"            # adamw | lion
    max_grad_norm: float = 1.0
    eval_every: int = 50                # validate every this many steps (and after the last one)
    patience: int = 4                   # evaluations without improvement before stopping
    checkpoint_minutes: float = 10.0    # also checkpoint between validations once this much time has passed
    max_eval_examples: int = 200        # validation subset used for model selection
    # Training cost levers (benchmarks/speed/train_speed.py measures each); validation and test always score all
    # candidates with the full model.
    train_negatives: int = 0            # >0: each training example scores its target + this many of its negatives
    enabled: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def settings(self) -> dict:
        """The keys that decide what a stage computes: its folder key and what --resume must match."""
        return section_settings(self.section, dataclasses.asdict(self))

    def validate(self) -> None:
        name = self.section
        _choice(f"{name}.optimizer", self.optimizer, OPTIMIZERS)
        _positive(f"{name}.steps", self.steps)
        _positive(f"{name}.batch_size", self.batch_size)
        _positive(f"{name}.grad_accum", self.grad_accum)
        _positive(f"{name}.warmup", self.warmup, minimum=0)
        _positive(f"{name}.patience", self.patience)
        _positive(f"{name}.max_eval_examples", self.max_eval_examples)
        _above_zero(f"{name}.lr", self.lr)
        _not_negative(f"{name}.weight_decay", self.weight_decay)
        _above_zero(f"{name}.max_grad_norm", self.max_grad_norm)
        if self.checkpoint_minutes < 0:
            raise DelrecError(f"{name}.checkpoint_minutes must be >= 0, got {self.checkpoint_minutes}")
        _positive(f"{name}.train_negatives", self.train_negatives, minimum=0)
        if self.warmup > self.steps:
            raise DelrecError(f"{name}.warmup ({self.warmup}) must not exceed {name}.steps ({self.steps})")
        _positive(f"{name}.eval_every", self.eval_every)
        if self.eval_every > self.steps:
            raise DelrecError(f"{name}.eval_every ({self.eval_every}) must not exceed {name}.steps "
                              f"({self.steps}): model selection needs validations during training")


@dataclass
class Stage1Config(StageConfig):
    """Stage 1: the soft prompt trained on TA + RPS (docs/method.md §5)."""

    section: ClassVar[str] = "stage1"
    alpha: float = 0.5                  # gradient-norm loss weighting exponent
    # TA and RPS rows in one forward and one backward pass, each task's gradient taken from its own view of
    # the soft prompt: the same two gradients as two passes (test). Off: on this CPU the step is compute-bound
    # and the mixed batch pads TA rows to RPS length (results/train_speed/stage1.json).
    pack_tasks: bool = False
    max_history: int = 0                # history titles in TA/RPS prompts; 0 = data.max_history

    def validate(self) -> None:
        super().validate()
        _not_negative("stage1.alpha", self.alpha)
        _positive("stage1.max_history", self.max_history, minimum=0)


@dataclass
class Stage2Config(StageConfig):
    """Stage 2: AdaLoRA fine-tuning on LSR (docs/method.md §6)."""

    section: ClassVar[str] = "stage2"
    steps: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-6
    warmup: int = 30
    init_r: int = 16                    # AdaLoRA: initial and final rank budget per module
    target_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    tinit: int = 0                      # 0: 60% of steps at full rank before pruning starts
    tfinal: int = 0                     # 0: a fifth of steps (final fine-tuning at the target budget)
    deltaT: int = 1
    orth_reg_weight: float = 0.5
    train_layers: int = 0               # adapt only the top N blocks (0 = all; decoder-only LMs)
    cache_lower: bool = True            # with train_layers: compute the frozen lower blocks once per example
    # With cache_lower over several epochs: keep those states in this folder too (relative: inside the run
    # folder; one file per method, backbone and soft prompt, GBs), reused by --resume and by other runs of the
    # same method, backbone and soft prompt; "" = in memory only. Where they are kept does not change a
    # result: not part of the stage's key (LOCATION_KEYS).
    lower_states_dir: str = ""

    def validate(self) -> None:
        super().validate()
        _positive("stage2.train_layers", self.train_layers, minimum=0)
        _positive("stage2.target_r", self.target_r)
        _above_zero("stage2.lora_alpha", self.lora_alpha)
        _dropout("stage2.lora_dropout", self.lora_dropout)
        _not_negative("stage2.orth_reg_weight", self.orth_reg_weight)
        _positive("stage2.deltaT", self.deltaT)
        _positive("stage2.tinit", self.tinit, minimum=0)
        _positive("stage2.tfinal", self.tfinal, minimum=0)
        if self.init_r < self.target_r:
            raise DelrecError(f"stage2.init_r ({self.init_r}) must be >= stage2.target_r ({self.target_r}): "
                              f"AdaLoRA prunes ranks, it never adds them")


@dataclass
class EvalConfig:
    methods: list = field(default_factory=lambda: list(DEFAULT_METHODS))  # delrec.methods: every row
    ablations: bool = False             # also delrec-no-ta and delrec-no-rps
    teacher_hint: bool = False          # beyond the paper: row delrec+hint
    hint_k: int = 5                     # delrec+hint: the teacher's top k of the example's own candidates
    # delrec+hint's training prompts: hints from a teacher trained on sequences cut before each user's training
    # targets (it has not seen them, as the teacher has not seen validation/test targets), or from the same
    # teacher as at test time ("same": it has seen those targets, so its training hints are too good)
    hint_train_teacher: str = "before-targets"
    user_prompt: bool = False           # beyond the paper: row delrec+user (a per-user soft prompt)
    hybrid_tokens: bool = False         # beyond the paper: row delrec+hybrid (an item vector after each title)
    hybrid_curriculum: bool = False     # delrec+hybrid: hybrid rows ramp from 0 to all over training (LLaRA)
    # beyond the paper: row delrec+residual (the LM trained and scored on top of the teacher's log-probabilities
    # of the candidates; its training examples' from the teacher of hint_train_teacher)
    teacher_residual: bool = False
    projector_rank: int = 16            # delrec+user / +hybrid: rank of the projector from the teacher's vectors
    # where the projected part enters: the input (any LM; every block trains through) or where the adapted
    # blocks begin (decoder-only with stage2.train_layers and cache_lower; stored lower states as for delrec)
    projector_at: str = "input"
    # whose vectors, in training and at test alike: the teacher trained before the LM's training targets
    # (before-targets) or the run's teacher, which has seen those targets ("same")
    projector_teacher: str = "before-targets"
    order_robust: bool = False          # score under two candidate orders and average
    fusion: bool = False                # beyond the paper: rows <lm method>+fusion (teacher + w * LM scores)
    fusion_weights: list = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0])
    batch_size: int = 8
    bootstrap: int = 1000

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for m in self.methods:
            _choice("eval.methods", m, EVAL_METHODS)
        _positive("eval.hint_k", self.hint_k)
        _choice("eval.hint_train_teacher", self.hint_train_teacher, HINT_TRAIN_TEACHERS)
        _positive("eval.projector_rank", self.projector_rank)
        _choice("eval.projector_teacher", self.projector_teacher, HINT_TRAIN_TEACHERS)
        _choice("eval.projector_at", self.projector_at, PROJECTOR_AT)
        _positive("eval.batch_size", self.batch_size)
        _positive("eval.bootstrap", self.bootstrap, minimum=0)
        if self.fusion and not self.fusion_weights:
            raise DelrecError("eval.fusion_weights: give at least one weight w for fusion (e.g. [0.0, 0.5, 1.0])")
        for w in self.fusion_weights:
            if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
                raise DelrecError(f"eval.fusion_weights: {w!r} is not a number >= 0")

    @property
    def uses_soft_prompt(self) -> bool:
        return any(METHODS[m].soft_prompt for m in run_methods(self))


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    out: str = "runs/default"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every section again (they may have been edited since they were built), then what spans sections."""
        for section in (self.data, self.teacher, self.lm, self.stage1, self.stage2, self.eval):
            section.validate()
        for name, stage in (("stage1", self.stage1), ("stage2", self.stage2)):
            if self.lm.scorer == "index-letter" and stage.train_negatives:
                # The prompt lists every candidate under its letter; dropping some would relabel the rest.
                raise DelrecError(f"{name}.train_negatives: must be 0 with lm.scorer=index-letter, which reads "
                                  f"all listed candidates in one pass; got {stage.train_negatives}")
        projected = self.eval.user_prompt or self.eval.hybrid_tokens
        if projected and self.eval.projector_at == "upper" and not (
                self.stage2.train_layers and self.stage2.cache_lower and self.lm.scorer == "title-likelihood"):
            raise DelrecError("eval.projector_at: upper adds the teacher part where the adapted blocks begin; it "
                              "needs stage2.train_layers > 0, stage2.cache_lower: true and lm.scorer: title-likelihood "
                              f"(got {self.stage2.train_layers}, {self.stage2.cache_lower}, {self.lm.scorer})")
        if self.eval.uses_soft_prompt and self.lm.n_soft < 1:
            raise DelrecError(f"lm.n_soft: must be >= 1 when a soft-prompt method is evaluated (eval.methods "
                              f"{self.eval.methods}, ablations {self.eval.ablations}, teacher_hint "
                              f"{self.eval.teacher_hint}, user_prompt {self.eval.user_prompt}, hybrid_tokens {self.eval.hybrid_tokens}, "
                              f"teacher_residual {self.eval.teacher_residual}), "
                              f"got {self.lm.n_soft}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path) -> None:
        from delrec.io import atomic_write_text
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _known_dataset(name: str) -> None:
    """Any name reads a folder (auto-detected format), so only an empty name or a misspelt known one is
    refused: `ML-100K` or `ml100k` would otherwise look for files under the wrong folder name."""
    if not name.strip():
        raise DelrecError(f"data.dataset: empty; use one of {', '.join(DATASET_DOMAINS)} or your dataset's "
                          f"name")
    squash = re.sub(r"[^a-z0-9]", "", name.lower())
    for known in DATASET_DOMAINS:
        if name != known and squash == re.sub(r"[^a-z0-9]", "", known):
            raise DelrecError(f"data.dataset: {name!r} is not a known dataset name; did you mean {known!r}?")


def _choice(key, value, options):
    if value not in options:
        raise DelrecError(f"{key}: {value!r} is not one of {', '.join(map(str, options))}")


def _positive(key, value, minimum=1):
    if value < minimum:
        raise DelrecError(f"{key}: must be >= {minimum}, got {value}")


def _above_zero(key, value):
    if not value > 0:  # also refuses NaN
        raise DelrecError(f"{key}: must be > 0, got {value}")


def _not_negative(key, value):
    if not value >= 0:
        raise DelrecError(f"{key}: must be >= 0, got {value}")


def _dropout(key, value):
    if not 0 <= value < 1:
        raise DelrecError(f"{key}: a dropout probability must be in [0, 1), got {value}")


def load_config(path: str | None = None, overrides: list[str] | tuple = ()) -> RunConfig:
    """Read a YAML preset (or defaults) and apply `section.key=value` overrides; validate everything."""
    return build_dataclass(RunConfig, read_tree(path, overrides))
