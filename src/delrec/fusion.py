"""Score fusion, beyond the paper (rows `<lm method>+fusion`): per candidate, the standardised score of a
teacher plus w times the standardised score of a trained LM. No training: it asks whether the LM knows
anything about the 20 candidates that the teacher does not.

The teacher and w are chosen on the validation candidate file only (NDCG@5, ties to the smaller w, then to
the teacher listed first), from `eval.fusion_weights`; w = 0 is the teacher alone, so on validation the
fused row is never below its teacher. The test file is scored once, with the chosen pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from delrec import DelrecError
from delrec.methods import ENSEMBLE, fused_row
from delrec.metrics import per_example, ranks_from_scores, summarize

SELECT_BY = "ndcg@5"


def standardise(scores: np.ndarray) -> np.ndarray:
    """Each row (one example's candidates) to mean 0, standard deviation 1: a teacher's logits and an LM's
    mean log-probabilities live on unrelated scales. A constant row becomes all zeros."""
    s = np.asarray(scores, dtype=np.float64)
    sd = s.std(axis=1, keepdims=True)
    return (s - s.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def fuse(teacher_scores: np.ndarray, lm_scores: np.ndarray, w: float) -> np.ndarray:
    if teacher_scores.shape != lm_scores.shape:
        raise DelrecError(f"fusion: teacher scores {teacher_scores.shape} and LM scores {lm_scores.shape} "
                          f"are not for the same candidate sets")
    return standardise(teacher_scores) + w * standardise(lm_scores)


def choose(valid_teachers: dict[str, np.ndarray], valid_lm: np.ndarray, labels, weights) -> dict:
    """The (teacher, w) with the best validation NDCG@5, and the whole grid it was chosen from."""
    grid, best = {}, None
    for name, t in valid_teachers.items():
        for w in sorted(float(x) for x in weights):
            value = float(per_example(ranks_from_scores(fuse(t, valid_lm, w), labels))[SELECT_BY].mean())
            grid[f"{name}/w={w:g}"] = round(value, 5)
            if best is None or value > best[2] + 1e-12:
                best = (name, w, value)
    if best is None:
        raise DelrecError("fusion: no teacher to fuse with (teacher.models is empty)")
    alone = float(per_example(ranks_from_scores(valid_lm, labels))[SELECT_BY].mean())
    return {"teacher": best[0], "w": best[1], f"valid_{SELECT_BY}": best[2], "valid_grid": grid,
            f"valid_{SELECT_BY}_unfused": round(alone, 5)}


def load_scores(folder: Path, name: str) -> np.ndarray:
    path = Path(folder) / name
    if not path.exists():
        raise DelrecError(f"fusion: {path} is missing; stage 2 writes it when eval.fusion is true: rerun that "
                          f"method's stage 2 with --set eval.fusion=true (or delete {Path(folder).name})")
    return np.load(path, allow_pickle=False)


def fusion_rows(run, cfg, teachers: dict, cands: dict, methods) -> dict[str, dict]:
    """From the scores each trained LM method's stage 2 saved on the validation and test candidate files:
    `<method>+fusion` (a teacher + w x the LM), the control `teacher-ensemble` (the best pair of teachers fused
    the same way: is the LM worth more to a teacher than a second teacher is?) and `<method>+ensemble` (that
    pair + w x the LM: does the LM add anything beyond a teacher ensemble?). Each row carries its choice
    under "fusion"; fusion.json in the run keeps them for `delrec evaluate` / `recommend`."""
    from delrec.runs import stage2_folders
    from delrec.teachers.evaluation import candidate_scores

    labels = {name: [c.target_index for c in cands[name]] for name in ("valid", "test")}
    scores = {name: {m: candidate_scores(t, cands[name]) for m, t in teachers.items()} for name in ("valid", "test")}
    weights, n_boot = cfg.eval.fusion_weights, cfg.eval.bootstrap
    lms = {m: {name: load_scores(folder, f"{name}_scores.npy") for name in ("valid", "test")}
           for m, folder in stage2_folders(run, cfg).items() if m in methods}
    out, choices = {}, {}
    for method, lm in lms.items():
        choices[fused_row(method, "teacher")] = choose(scores["valid"], lm["valid"], labels["valid"], weights) | {
            "lm": method, "second_teacher": None, "w_second": 0.0}
    pairs = {}
    for second in teachers if len(teachers) > 1 else []:
        others = {m: s for m, s in scores["valid"].items() if m != second}
        pairs[second] = choose(others, scores["valid"][second], labels["valid"], weights)
    if pairs:
        second, pair = max(pairs.items(), key=lambda kv: kv[1][f"valid_{SELECT_BY}"])
        ensemble = pair | {"lm": None, "second_teacher": second, "w_second": pair["w"], "w": 0.0}
        choices[ENSEMBLE] = ensemble
        base = fused_scores(ensemble, scores["valid"], None)
        for method, lm in lms.items():
            picked = choose({ENSEMBLE: base}, lm["valid"], labels["valid"], weights)
            choices[fused_row(method, "ensemble")] = picked | {k: ensemble[k] for k in ("teacher", "second_teacher",
                                                                                   "w_second")} | {"lm": method}
    for name, choice in choices.items():
        fused = fused_scores(choice, scores["test"], lms[choice["lm"]]["test"] if choice["lm"] else None)
        out[name] = summarize(ranks_from_scores(fused, labels["test"]), n_boot=n_boot) | {"fusion": choice}
    return out


def fused_scores(choice: dict, teacher_scores: dict[str, np.ndarray], lm_scores: np.ndarray | None) -> np.ndarray:
    """A stored choice applied to candidate sets: its teacher's scores (`teacher_scores` by model), fused
    with its second teacher's (w_second) when it has one, then with the LM's (w) when it has one."""
    s = teacher_scores[choice["teacher"]]
    if choice.get("second_teacher"):
        s = fuse(s, teacher_scores[choice["second_teacher"]], choice["w_second"])
    return fuse(s, lm_scores, choice["w"]) if choice.get("lm") else s


def read_choices(run_root: Path) -> dict[str, dict]:
    """fusion.json of a run: row name -> its choice ({} for a run trained without eval.fusion)."""
    import json

    path = Path(run_root) / "fusion.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DelrecError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
