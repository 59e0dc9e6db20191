"""TA / RPS / LSR training and evaluation examples, built from splits, candidates and teacher top-k.

Unlike the authors' released code: RPS never shows the true target, its label is the teacher's top-1 (not off
by one); every negative lies outside the user's history; every task ranks only its own candidates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from delrec.choices import TEACHER_NAMES
from delrec.data.candidates import CandidateSet, sample_negatives
from delrec.data.catalog import Catalog, without_year
from delrec.prompts import templates


@dataclass(frozen=True)
class PromptExample:
    task: str                      # ta | rps | lsr
    prompt: str                    # contains templates.SOFT where the soft prompt goes (if any)
    candidates: tuple[str, ...]    # titles, in the order scored
    items: tuple[int, ...]         # dense ids of the candidates
    label: int                     # index of the right answer in `candidates`
    slot_items: tuple[int, ...] = ()  # delrec+hybrid: dense ids of the items whose ITEM slots the prompt holds
    prior: tuple[float, ...] = ()  # delrec+residual: the teacher's log-probability of each candidate, added to the LM's


@dataclass
class PromptBuilder:
    catalog: Catalog
    domain: str
    teacher: str = "sasrec"
    max_history: int = 10
    n_candidates: int = 20
    letters: bool = False          # index-letter scorer: candidates listed as A..T
    list_candidates: bool = True   # False: prompts omit the list (title scorers only; letters need it)
    title_years: bool = True       # False: every title the LM reads or scores loses a trailing " (1995)"

    @property
    def teacher_name(self) -> str:
        return TEACHER_NAMES.get(self.teacher, self.teacher)

    def title(self, item: int) -> str:
        t = self.catalog.titles[item]
        return t if self.title_years else without_year(t)

    def titles(self, items) -> list[str]:
        return [self.title(i) for i in items]

    def listed(self, cands) -> list[str]:
        return self.titles(cands) if self.list_candidates or self.letters else []

    def _candidates(self, rng: random.Random, fixed: list[int], history, n_items: int) -> list[int]:
        exclude = set(history) | set(fixed)
        cands = list(fixed) + sample_negatives(rng, n_items, exclude, self.n_candidates - len(fixed))
        rng.shuffle(cands)
        return cands

    def ta(self, history: tuple[int, ...], teacher_top1: int, rng: random.Random) -> PromptExample | None:
        """Recover u_m, the most recent item, from an in-context demo and the teacher's next-item guess."""
        if len(history) < 5:
            return None
        label = history[-1]
        demo = history[:4]
        query = history[3:-1][-(self.max_history - 1):] if self.max_history > 1 else history[-2:-1]
        cands = self._candidates(rng, [label], history, len(self.catalog))
        prompt = templates.render_ta(self.domain, self.teacher_name, self.titles(demo), self.titles(query),
                                     self.title(teacher_top1), self.listed(cands), self.letters)
        return PromptExample("ta", prompt, tuple(self.titles(cands)), tuple(cands), cands.index(label))

    def rps(self, history: tuple[int, ...], teacher_topk: list[int], rng: random.Random) -> PromptExample | None:
        """Reproduce the teacher's top-1 from its other top-k items; the true next item is never shown."""
        if not teacher_topk:
            return None
        k = min(len(teacher_topk), self.n_candidates - 1)
        topk = list(teacher_topk[:k])
        cands = self._candidates(rng, topk, history, len(self.catalog))
        prompt = templates.render_rps(self.domain, self.teacher_name, self.titles(history[-self.max_history:]),
                                      self.titles(topk[1:]), self.listed(cands), self.letters)
        return PromptExample("rps", prompt, tuple(self.titles(cands)), tuple(cands), cands.index(topk[0]))

    def lsr(self, cs: CandidateSet, *, soft: bool = True, hint: list[int] | None = None,
            slots: bool = False) -> PromptExample:
        """The recommendation task: the user's real next item among the example's candidates; with `slots`,
        an item vector's place after each history title (delrec+hybrid)."""
        cands = list(cs.candidates)
        shown = cs.history[-self.max_history:]
        prompt = templates.render_lsr(self.domain, self.teacher_name, self.titles(shown), self.listed(cands),
                                      self.letters, soft=soft, hint=self.titles(hint) if hint else None,
                                      item_slots=slots)
        return PromptExample("lsr", prompt, tuple(self.titles(cands)), tuple(cands), cs.target_index,
                             tuple(shown) if slots else ())


def build_stage1(builder: PromptBuilder, histories: list[tuple[int, ...]], topk: list[list[int]], *, seed: int
                 ) -> tuple[list[PromptExample], list[PromptExample]]:
    """TA and RPS examples for the same histories (the teacher saw exactly these histories)."""
    rng = random.Random(seed)
    ta, rps = [], []
    for hist, top in zip(histories, topk):
        t = builder.ta(hist, top[0], rng) if top else None
        r = builder.rps(hist, top, rng)
        if t:
            ta.append(t)
        if r:
            rps.append(r)
    return ta, rps
