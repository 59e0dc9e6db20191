"""HR@k / NDCG@k over candidate scores (ties pessimistic), bootstrap intervals, and metrics.json rows
(docs/method.md §7)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from delrec.io import atomic_write_text

DEFAULT_KS = (1, 5)


def ranks_from_scores(scores, target_index) -> np.ndarray:
    """1-based rank of each target among its row's candidates; an equal score counts as ranked above."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(target_index, dtype=np.int64)
    if s.ndim != 2 or t.shape != (s.shape[0],):
        raise ValueError(f"scores must be [N, C] and targets [N]; got {s.shape} and {t.shape}")
    target_scores = s[np.arange(len(t)), t][:, None]
    nan = np.isnan(s)
    better_or_tied = (s >= target_scores) | nan
    better_or_tied[np.arange(len(t)), t] = False
    return 1 + better_or_tied.sum(axis=1)


def hit_and_ndcg(ranks, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per example: 1[rank <= k] and 1[rank <= k] / log2(rank + 1) (one relevant item, so IDCG = 1)."""
    ranks = np.asarray(ranks)
    hit = (ranks <= k).astype(np.float64)
    return hit, hit / np.log2(ranks + 1.0)


def per_example(ranks: np.ndarray, ks=DEFAULT_KS) -> dict[str, np.ndarray]:
    out = {}
    for k in ks:
        out[f"hr@{k}"], ndcg = hit_and_ndcg(ranks, k)
        if k > 1:  # NDCG@1 is HR@1
            out[f"ndcg@{k}"] = ndcg
    return out


def summarize(ranks, ks=DEFAULT_KS, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Means over all examples plus a percentile-bootstrap 95% interval for each metric, and the per-example
    ranks themselves (`ranks`, in the candidate file's order), so that any paired interval between two rows
    can be recomputed from metrics.json alone."""
    values = per_example(ranks, ks)
    n = len(np.asarray(ranks))
    row: dict = {name: float(v.mean()) if n else float("nan") for name, v in values.items()}
    row["n"] = int(n)
    row["ranks"] = [int(r) for r in np.asarray(ranks)]
    if n and n_boot:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_boot, n))
        row["ci95"] = {name: [float(np.percentile(v[idx].mean(1), 2.5)), float(np.percentile(v[idx].mean(1), 97.5))]
                       for name, v in values.items()}
    return row


def ndcg_hr_full(ranks, k: int = 10) -> dict:
    """Means over full-catalogue ranks (teachers), under `full/` so they never mix with candidate metrics."""
    hit, ndcg = hit_and_ndcg(ranks, k)
    return {f"full/hr@{k}": float(hit.mean()), f"full/ndcg@{k}": float(ndcg.mean())}


class MetricsFile:
    """The shared metrics.json: {dataset, protocol, candidates, rows: {method: {hr@1, hr@5, ndcg@5, n, ci95}}}."""

    def __init__(self, path: str | os.PathLike, *, dataset: str = "", protocol: str = "", candidates: int = 20,
                 write: bool = True, fresh: bool = False):
        self.path = Path(path)
        self.write = write  # False on all but the main process of a distributed run
        if self.path.exists() and not fresh:  # fresh: rows of an earlier run are not kept
            self.data = json.loads(self.path.read_text())
        else:
            self.data = {"dataset": dataset, "protocol": protocol, "candidates": candidates, "rows": {}}

    @property
    def rows(self) -> dict:
        return self.data["rows"]

    def add(self, method: str, row: dict) -> None:
        self.data["rows"][method] = row
        self.save()

    def save(self) -> None:
        if self.write:
            atomic_write_text(self.path, json.dumps(self.data, indent=2) + "\n")


def format_table(rows: dict, keys=("hr@1", "hr@5", "ndcg@5"), *, intervals: bool = False) -> str:
    """A markdown table of rows; a missing metric shows as a dash. With `intervals`, each candidate metric
    is followed by its 95% bootstrap interval, `0.3400 [0.250, 0.430]`."""
    extra = sorted({k for r in rows.values() for k in r if k.startswith("full/")})
    cols = list(keys) + extra
    lines = ["| method | " + " | ".join(cols) + " | n |", "|---" * (len(cols) + 2) + "|"]
    for name, r in rows.items():
        cells = []
        for c in cols:
            v = r.get(c)
            cell = f"{v:.4f}" if isinstance(v, (int, float)) and not math.isnan(v) else "-"
            ci = r.get("ci95", {}).get(c)
            if intervals and ci and cell != "-":
                cell += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r.get('n', '-')} |")
    return "\n".join(lines)


def paired_difference(ranks_a, ranks_b, ks=DEFAULT_KS, *, n_boot: int = 10000, seed: int = 0) -> dict:
    """b - a per metric over the same examples, with a paired percentile-bootstrap 95% interval: each
    resample draws the same examples for both rows, so the interval is that of the difference."""
    a, b = np.asarray(ranks_a), np.asarray(ranks_b)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired ranks must be two equal-length lists over the same examples; got {a.shape}, {b.shape}")
    pa, pb = per_example(a, ks), per_example(b, ks)
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    out = {}
    for m in pa:
        d = pb[m] - pa[m]
        boots = d[idx].mean(1)
        out[m] = {"a": float(pa[m].mean()), "b": float(pb[m].mean()), "b_minus_a": float(d.mean()),
                  "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]}
    return out
