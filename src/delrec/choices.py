"""Every value a choice-valued setting can take, defined once: `config.py` checks settings against these, and
the code that acts on a setting imports its list from here rather than spelling it again."""

from __future__ import annotations

# teacher.models: config name -> the name prompts use for the model
TEACHER_NAMES = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "caser": "Caser"}
TEACHER_LOSSES = ("ce", "bce")

# data.dataset: the names delrec knows -> their default prompt domain. Any other name is read with
# `data.format` (auto: detected from the files) and gets the movie wording unless `data.domain` says
# otherwise.
DATASET_DOMAINS = {"synthetic": "movie", "ml-100k": "movie", "ml-1m": "movie", "steam": "game",
                   "beauty": "beauty", "home-kitchen": "home", "csv": "movie"}
FORMATS = ("movielens-100k", "movielens-1m", "llara", "atomic", "amazon-raw", "p5", "csv")
PROTOCOLS = ("leave-one-out", "user-split", "predefined")

# lm.dtype -> the torch dtype's attribute name (torch.float32, ...)
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
SCORERS = ("title-likelihood", "first-token", "index-letter")
LENGTH_NORMS = ("mean", "sum")
CANDIDATE_PASSES = ("auto", "packed", "cached")
SOFT_INITS = ("vocab", "normal")

OPTIMIZERS = ("adamw", "lion")

# eval.methods and every other row of a run: the method table, delrec.methods

# eval.hint_train_teacher: which teacher writes the hints of delrec+hint's training prompts
HINT_TRAIN_TEACHERS = ("before-targets", "same")
PROJECTOR_AT = ("input", "upper")  # eval.projector_at: where delrec+user / delrec+hybrid's teacher part enters
