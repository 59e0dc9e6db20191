"""The three DELRec prompt templates (docs/method.md §3, §5, §6): TA, RPS and LSR, one wording per domain.

Each prompt starts with an instruction naming the teacher model, then "The recommendation pattern of the
<teacher> model is: [SOFT].", then the task text. `SOFT` marks where the scorer splices in the soft prompt's
vectors; it appears exactly once (never, for LSR with soft=False). Every prompt ends exactly where the answer
begins, with no trailing space: the scorer appends the answer (" <title>" or " <letter>") as a continuation,
so one template serves all three scorers. Plain text, no chat template: the same prompt works for
encoder-decoder and decoder-only models.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from delrec import DelrecError

SOFT = "[SOFT]"
ITEM = "[ITEM]"  # delrec+hybrid: one vector after each history title (lm/hybrid_prompt.py)
LETTERS = string.ascii_uppercase  # index-letter lists support up to 26 candidates


@dataclass(frozen=True)
class Domain:
    verb: str    # what a user does with an item
    past: str
    item: str
    items: str


DOMAINS = {
    "movie": Domain("watch", "watched", "movie", "movies"),
    "game": Domain("play", "played", "game", "games"),
    "beauty": Domain("purchase", "purchased", "beauty item", "beauty items"),
    "home": Domain("purchase", "purchased", "home item", "home items"),
}

PATTERN = "The recommendation pattern of the {teacher} model is: " + SOFT + "."

# Named slots: {teacher} and the domain words {verb} {past} {item} {items}; the task slots are listed with
# each render function. {candidates} is a whole block ending in a newline; {answer} is the final stem.
TA = (
    "Temporal analysis with the {teacher} model: find the {item} missing from a user's sequence of {items}. "
    + PATTERN + "\n"
    "Example: a user has already {past} {demo_before}, [{item} M]. The next {item} the user plans to {verb} is "
    "{demo_next}. So [{item} M] is {demo_answer}.\n"
    "Question: then the user {past} {history}, [{item} X]. The {teacher} model says the next {item} is "
    "{teacher_next}.\n"
    "{candidates}"
    "{answer}"
)
RPS = (
    "Recommendation pattern simulating: predict the {items} that the {teacher} model recommends to a user. "
    + PATTERN + "\n"
    "The user has {past} these {items} in order: {history}.\n"
    "{candidates}"
    "The next {items} predicted by the {teacher} model might be: [the top one]{others}. {answer}"
)
LSR = (
    "{instruction}\n"
    "The user has {past} these {items} in order: {history}.\n"
    "{hint}"
    "{candidates}"
    "{answer}"
)
LSR_INSTRUCTION = ("Sequential recommendation with the {teacher} model: recommend the next {item} a user will "
                   "{verb}. " + PATTERN)
# Without a soft prompt there is no learned pattern to name, so the sentence (and the teacher) is left out.
LSR_INSTRUCTION_NO_SOFT = "Sequential recommendation: recommend the next {item} a user will {verb}."
HINT = "The {teacher} model's top candidates, best first: {titles}.\n"


def _domain(domain: str) -> Domain:
    if domain not in DOMAINS:
        raise DelrecError(f"data.domain: {domain!r} has no prompt wording; use one of {', '.join(DOMAINS)}")
    return DOMAINS[domain]


def _join(titles: list[str]) -> str:
    for t in titles:
        for marker in (SOFT, ITEM):  # the markers must be the template's own, or the scorer would splice wrongly
            if marker in t:
                raise DelrecError(f"prompt: item title {t!r} contains the marker {marker}")
    return ", ".join(titles)


def candidate_block(candidates: list[str], letters: bool) -> str:
    """Candidates as "A. title" lines (index-letter scorer) or one comma-separated line; none when the
    prompt does not list them (the title-likelihood scorer scores each candidate without seeing the list)."""
    if not candidates:
        return ""
    if letters:
        if len(candidates) > len(LETTERS):
            raise DelrecError(f"prompt: index letters support at most {len(LETTERS)} candidates, "
                              f"got {len(candidates)}")
        _join(candidates)
        return "Candidates:\n" + "".join(f"{LETTERS[i]}. {t}\n" for i, t in enumerate(candidates))
    return f"Candidates: {_join(candidates)}.\n"


def _answer(stem: str, letters: bool) -> str:
    # "... is candidate" -> " C": the letter reads as a natural continuation, like a title does.
    return stem + (" candidate" if letters else "")


def render_ta(domain: str, teacher: str, demo: list[str], query_history: list[str], teacher_next: str,
              candidates: list[str], letters: bool) -> str:
    """Temporal analysis: demo = u1..u4 (u3 is the demonstrated answer), query_history = u4..u_{m-1}."""
    if len(demo) < 4:
        raise DelrecError(f"prompt: the TA demonstration needs 4 items, got {len(demo)}")
    d = _domain(domain)
    return TA.format(teacher=teacher, verb=d.verb, past=d.past, item=d.item, items=d.items,
                     demo_before=_join(demo[:2]), demo_next=_join(demo[3:4]), demo_answer=_join(demo[2:3]),
                     history=_join(query_history), teacher_next=_join([teacher_next]),
                     candidates=candidate_block(candidates, letters),
                     answer=_answer(f"[{d.item} X] is", letters))


def render_rps(domain: str, teacher: str, history: list[str], others: list[str], candidates: list[str],
               letters: bool) -> str:
    """Recommendation pattern simulating: others = the teacher's P2..Pk; the answer is P1."""
    d = _domain(domain)
    return RPS.format(teacher=teacher, verb=d.verb, past=d.past, item=d.item, items=d.items,
                      history=_join(history), others="".join(", " + t for t in others) if others else "",
                      candidates=candidate_block(candidates, letters),
                      answer=_answer("The top one is", letters))


def render_lsr(domain: str, teacher: str, history: list[str], candidates: list[str], letters: bool,
               soft: bool = True, hint: list[str] | None = None, item_slots: bool = False) -> str:
    """The recommendation task. soft=False drops the soft-prompt sentence (lsr-only, zero-shot rows);
    hint = the teacher's top titles among this example's candidates, best first (delrec+hint); item_slots
    puts an ITEM marker after each history title (delrec+hybrid: the scorer splices a vector there)."""
    d = _domain(domain)
    words = {"teacher": teacher, "verb": d.verb, "past": d.past, "item": d.item, "items": d.items}
    instruction = (LSR_INSTRUCTION if soft else LSR_INSTRUCTION_NO_SOFT).format(**words)
    shown = _join(history)
    if item_slots:
        shown = ", ".join(f"{t} {ITEM}" for t in history)
    return LSR.format(**words, instruction=instruction, history=shown,
                      hint=HINT.format(teacher=teacher, titles=_join(hint)) if hint else "",
                      candidates=candidate_block(candidates, letters),
                      answer=_answer(f"The {d.item} the user will {d.verb} next is", letters))


def mark_soft(prompt: str, n_soft: int | None = None) -> str:
    """The prompt for display, the marker replaced by a readable placeholder."""
    return prompt.replace(SOFT, f"<soft prompt x{n_soft}>" if n_soft else "<soft prompt>").replace(
        ITEM, "<item vector>")
