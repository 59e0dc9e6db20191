"""Conventional sequential recommenders (the DELRec teachers) behind one small interface."""

from __future__ import annotations

from delrec import DelrecError
from delrec.teachers.base import SequentialRecommender, history_mask, pad_histories
from delrec.teachers.caser import Caser
from delrec.teachers.gru4rec import GRU4Rec
from delrec.teachers.popularity import Popularity
from delrec.teachers.sasrec import SASRec

# keyed by each model's own `name`; tests check that these are exactly the names config accepts
TEACHERS = {cls.name: cls for cls in (SASRec, GRU4Rec, Caser)}
BASELINES = {Popularity.name: Popularity}


def build_teacher(name: str, n_items: int, cfg) -> SequentialRecommender:
    """A fresh model of kind `name` (sasrec | gru4rec | caser | popularity) sized by a TeacherConfig."""
    cls = TEACHERS.get(name) or BASELINES.get(name)
    if cls is None:
        raise DelrecError(f"unknown teacher {name!r}; choose one of {', '.join([*TEACHERS, *BASELINES])}")
    return cls(n_items, cfg)


__all__ = ["BASELINES", "TEACHERS", "SequentialRecommender", "build_teacher", "history_mask", "pad_histories"]
