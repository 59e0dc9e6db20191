"""The teacher's top-k for every example, exported as `topk.json` (raw ids) and read back as dense ids.

Format: {"model", "k", "dataset", "fingerprint", "splits": {"train" | "valid" | "test": [{"user": raw user,
"history_len": n, "topk": [raw item ids]}]}}: the teacher's top-k for the history `sequence[:history_len]` of
that user, history items excluded.
"""

from __future__ import annotations

import json
from pathlib import Path

from delrec import DelrecError
from delrec.data.sequences import Dataset
from delrec.data.split import Split
from delrec.io import atomic_write_text
from delrec.teachers.teacher import Teacher


def export_topk(teacher: Teacher, dataset: Dataset, split: Split, path: str | Path, k: int) -> None:
    raw_u, raw_i = dataset.users, dataset.catalog.raw_ids
    splits = {}
    for part in ("train", "valid", "test"):
        examples = getattr(split, part)
        tops = teacher.topk([e.history for e in examples], k)
        splits[part] = [{"user": raw_u[e.user], "history_len": len(e.history), "topk": [raw_i[i] for i in t]}
                        for e, t in zip(examples, tops)]
    doc = {"model": teacher.name, "k": k, "dataset": dataset.name, "fingerprint": dataset.fingerprint(),
           "splits": splits}
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n")


def read_topk(path: str | Path, dataset: Dataset) -> dict[str, dict[tuple[int, int], list[int]]]:
    """topk.json -> {split: {(dense user index, history_len): [dense item ids]}}."""
    doc = json.loads(Path(path).read_text())
    if doc.get("fingerprint") != dataset.fingerprint():
        raise DelrecError(f"{path}: exported for another dataset (fingerprint {doc.get('fingerprint')}, "
                          f"loaded {dataset.fingerprint()}); rerun `delrec teach`")
    users = {u: i for i, u in enumerate(dataset.users)}
    cat = dataset.catalog
    return {part: {(users[r["user"]], r["history_len"]): [cat.dense(x) for x in r["topk"]] for r in rows}
            for part, rows in doc["splits"].items()}
