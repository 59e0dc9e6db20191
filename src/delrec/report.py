"""results.md (the metrics table) and plots/ (training curves, metric bars) for a run directory."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from delrec.io import atomic_path, atomic_write_text
from delrec.metrics import MetricsFile, format_table


def write_report(run_dir: str | Path, metrics: MetricsFile) -> Path:
    run_dir = Path(run_dir)
    d = metrics.data
    text = (f"# Results: {d['dataset']} ({d['protocol']}, {d['candidates']} candidates)\n\n"
            + format_table(d["rows"]) + "\n\nHR@k / NDCG@k over each example's candidates (ties pessimistic); "
            "`full/*` = full-catalogue ranking (teachers only). 95% bootstrap intervals are in metrics.json.\n")
    atomic_write_text(run_dir / "results.md", text)
    try:
        plot(run_dir, d["rows"])
    except ImportError:
        print("plots skipped: install the [plots] extra (matplotlib)")
    return run_dir / "results.md"


def _curves(log_path: Path) -> dict:
    curves: dict = defaultdict(lambda: defaultdict(list))
    if not log_path.exists():
        return curves
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        name = rec.get("stage", "?")
        if rec.get("event") == "eval":
            curves[name]["valid"].append((rec["step"], rec["valid"]))
        else:
            for k, v in rec.items():
                if k.startswith(("loss", "w_")) and isinstance(v, (int, float)):
                    curves[name][k].append((rec["step"], v))
    return curves


def plot(run_dir: Path, rows: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    names = list(rows)
    keys = ["hr@1", "hr@5", "ndcg@5"]
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 1.1), 4))
    width = 0.8 / len(keys)
    for i, k in enumerate(keys):
        vals = [rows[n].get(k, 0.0) for n in names]
        errs = [[v - rows[n].get("ci95", {}).get(k, [v, v])[0] for n, v in zip(names, vals)],
                [rows[n].get("ci95", {}).get(k, [v, v])[1] - v for n, v in zip(names, vals)]]
        ax.bar([j + i * width for j in range(len(names))], vals, width, yerr=errs, label=k, capsize=2)
    ax.set_xticks([j + width for j in range(len(names))], names, rotation=30, ha="right")
    ax.set_ylabel("metric (95% bootstrap CI)")
    ax.legend()
    fig.tight_layout()
    _save(fig, out / "metrics.png")
    curves = _curves(run_dir / "log.jsonl")
    if curves:
        fig, axes = plt.subplots(len(curves), 1, figsize=(7, 2.6 * len(curves)), squeeze=False)
        for ax, (name, series) in zip(axes[:, 0], curves.items()):
            for k, pts in series.items():
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, marker="o" if k == "valid" else None,
                        markersize=3)
            ax.set_title(name)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        fig.tight_layout()
        _save(fig, out / "training.png")
    plt.close("all")


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
