"""Every row a run can report, declared once and in the order runs report them: what each row needs (a
teacher, a stage-1 soft prompt, stage-2 adapters, the teacher's hint in the prompt, fused scores) and the
setting that turns it on. The pipeline, `delrec evaluate`, `delrec recommend --method`, the preflight checks
and the config read this table; no other module decodes a row's kind from its name.

Adding a row is one entry here plus the code that trains or scores it.
"""

from __future__ import annotations

from dataclasses import dataclass

from delrec import DelrecError


@dataclass(frozen=True)
class Method:
    name: str
    kind: str                            # baseline | teacher | lm | fused
    switch: str                          # the eval setting that turns the row on
    stage1_tasks: tuple[str, ...] = ()   # this row distils its own soft prompt on these stage-1 tasks
    soft_prompt: str | None = None       # the row whose stage-1 soft prompt it uses (None: no soft prompt)
    stage2: bool = False                 # AdaLoRA adapters fine-tuned in stage 2
    hint: bool = False                   # the teacher's ranking of the example's candidates is in the prompt
    user: bool = False                   # the soft prompt is a function of the teacher's user state
    hybrid: bool = False                 # an item vector from the teacher after each history title
    residual: bool = False               # the LM's scores are added to the teacher's log-probabilities
    base: str | None = None              # fused rows: the LM row fused in (None: teachers only)
    fuses: str = ""                      # fused rows: "teacher" (one teacher) or "ensemble" (the teacher pair)

    @property
    def reads_teacher(self) -> bool:
        """Its examples are built with the run's first teacher (its hint or its prior), in training from the
        teacher trained before the training targets (eval.hint_train_teacher)."""
        return self.hint or self.residual

    def teacher_roles(self, teacher):
        """(hint teacher, prior teacher) for lsr_examples: `teacher` in the role this row reads it in."""
        return (teacher if self.hint else None), (teacher if self.residual else None)


def _lm(name: str, switch: str = "eval.methods", tasks: tuple[str, ...] = (), **kw) -> Method:
    soft_prompt = kw.pop("soft_prompt", name if tasks else None)
    return Method(name, "lm", switch, tasks, soft_prompt, **kw)


_ROWS = [
    Method("popularity", "baseline", "eval.methods"),
    Method("teachers", "teacher", "eval.methods"),  # one row per model of teacher.models, named by the model
    _lm("lm-zero-shot"),
    _lm("lsr-only", stage2=True),
    _lm("delrec", tasks=("ta", "rps"), stage2=True),
    _lm("delrec-no-ta", "eval.ablations", ("rps",), stage2=True),
    _lm("delrec-no-rps", "eval.ablations", ("ta",), stage2=True),
    _lm("delrec+hint", "eval.teacher_hint", soft_prompt="delrec", stage2=True, hint=True),  # beyond the paper
    _lm("delrec+user", "eval.user_prompt", soft_prompt="delrec", stage2=True, user=True),  # beyond the paper
    _lm("delrec+hybrid", "eval.hybrid_tokens", soft_prompt="delrec", stage2=True, hybrid=True),  # lm/teacher_prompts.py
    _lm("delrec+residual", "eval.teacher_residual", soft_prompt="delrec", stage2=True, residual=True),  # lm_rows.py
]
_TRAINED = [m.name for m in _ROWS if m.stage2]
# Fused rows (fusion.py, beyond the paper): each trained row + one teacher, the teacher pair alone, each
# trained row + the pair.
_ROWS += [Method(f"{b}+fusion", "fused", "eval.fusion", base=b, fuses="teacher") for b in _TRAINED]
_ROWS += [Method("teacher-ensemble", "fused", "eval.fusion", fuses="ensemble")]
_ROWS += [Method(f"{b}+ensemble", "fused", "eval.fusion", base=b, fuses="ensemble") for b in _TRAINED]

METHODS: dict[str, Method] = {m.name: m for m in _ROWS}
# eval.methods: the rows a user lists there (the ablations may also be turned on by eval.ablations)
EVAL_METHODS = tuple(m.name for m in _ROWS if m.switch in ("eval.methods", "eval.ablations"))
DEFAULT_METHODS = tuple(m.name for m in _ROWS if m.switch == "eval.methods")  # eval.methods' default
TRAINED_METHODS = tuple(_TRAINED)  # the rows with a stage 2, in report order


def method(name: str) -> Method:
    if name not in METHODS:
        raise DelrecError(f"unknown method {name!r}; methods: {', '.join(METHODS)}")
    return METHODS[name]


def fused_row(base: str | None, fuses: str) -> str:
    """The name of the fused row of `base` (None: the teachers-only ensemble)."""
    for m in _ROWS:
        if m.kind == "fused" and m.base == base and m.fuses == fuses:
            return m.name
    raise DelrecError(f"no fused row of {base!r} ({fuses})")


def is_on(name: str, ev) -> bool:
    """Whether an eval config (EvalConfig) turns row `name` on; fused rows: when eval.fusion is on (each is
    then reported when its LM row was trained)."""
    m = method(name)
    if m.switch == "eval.methods":
        return name in ev.methods
    if m.switch == "eval.ablations":
        return ev.ablations or name in ev.methods
    return bool(getattr(ev, m.switch.removeprefix("eval.")))


def run_methods(ev) -> list[str]:
    """The LM rows an eval config turns on, in report order."""
    return [name for name, m in METHODS.items() if m.kind == "lm" and is_on(name, ev)]


ENSEMBLE = fused_row(None, "ensemble")
