"""results.md (the metrics table, what produced it, what it does not show) and plots/ (training curves,
metric bars) for a run directory."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from delrec.choices import TEACHER_NAMES
from delrec.config import RunConfig
from delrec.io import atomic_path, atomic_write_text
from delrec.metrics import MetricsFile, format_table

CAPTION = ("Each cell: the mean over the n test examples [its 95% bootstrap interval]. "
           "HR@k / NDCG@k over each example's candidates (ties pessimistic); `full/*` = full-catalogue "
           "ranking (teachers only).")


def run_notes(cfg: RunConfig | None, rows: dict) -> list[str]:
    """What a table does not show, said under it. A random tiny LM (the demo's) knows no titles: stage 1
    has nothing to distil into, so `lsr-only` may well beat `delrec` there; that is not the paper's test."""
    lm_rows = set(rows) - {"popularity", *TEACHER_NAMES}
    if cfg is None or not lm_rows or not cfg.lm.backbone.startswith("tiny-random-"):
        return []
    return [(f"Note: lm.backbone={cfg.lm.backbone} is a randomly initialised LM, not a pretrained one. This run "
             "shows the machinery (teachers, stage 1, stage 2, every method scored on the same candidates); it "
             "does not test the paper's claim that distillation helps, which needs a pretrained LM (README, "
             "Results: delrec vs lsr-only on MovieLens-100K with SmolLM2).")]


def results_table(rows: dict, cfg: RunConfig | None = None) -> str:
    """What commands print: the table with intervals, its caption and the notes."""
    return "\n\n".join([format_table(rows, intervals=True), CAPTION, *run_notes(cfg, rows)])


def produced_by(stamp: dict | None) -> str:
    if not stamp:
        return "Produced by: not recorded (a run from before delrec stamped its results)."
    commit = stamp.get("git_commit") or "unknown (not run from a git checkout)"
    return (f"Produced by delrec {stamp.get('delrec_version')}, commit {commit}, on {stamp.get('started')}, "
            f"from the config {stamp.get('config')} (digest {stamp.get('config_digest')}).")


def results_markdown(title: str, data: dict, cfg: RunConfig | None, source: str = "") -> str:
    head = f"# {title}: {data['dataset']} ({data['protocol']}, {data['candidates']} candidates)"
    parts = [head, produced_by(data.get("produced_by")) + (f" {source}" if source else ""),
             results_table(data["rows"], cfg)]
    return "\n\n".join(parts) + "\n"


def write_report(run_dir: str | Path, metrics: MetricsFile, cfg: RunConfig | None = None) -> Path:
    run_dir = Path(run_dir)
    again = "`delrec run --config <this folder>/config.yaml` runs it again."
    atomic_write_text(run_dir / "results.md", results_markdown("Results", metrics.data, cfg, again))
    try:
        plot(run_dir, metrics.data["rows"])
    except ImportError:
        print("plots skipped: install the [plots] extra (matplotlib)")
    return run_dir / "results.md"


def _curves(log_path: Path) -> dict:
    """stage -> {"x": what the x axis counts, "title", "metric", series name -> [(x, y)]}; a stage started
    again (other settings, or trained anew) shows its latest history only."""
    curves: dict = {}
    if not log_path.exists():
        return curves
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        name, event = rec.get("stage", "?"), rec.get("event")
        if event == "start" or name not in curves:
            folder = rec.get("folder") if event == "start" else None
            curves[name] = {"x": "epoch" if name.startswith("teacher/") else "step",
                            "title": f"{name} ({folder})" if folder and folder != name.split("/")[-1] else name,
                            "metric": None, "series": defaultdict(list)}
        c = curves[name]
        x = rec.get(c["x"])
        if x is None:
            continue
        if event in ("eval", "epoch") and "valid" in rec:
            c["metric"] = rec.get("metric") or c["metric"]
            c["series"]["valid"].append((x, rec["valid"]))
        if event in (None, "epoch"):
            for k, v in rec.items():
                if k.startswith(("loss", "w_")) and isinstance(v, (int, float)):
                    c["series"][k].append((x, v))
    return {k: v for k, v in curves.items() if v["series"]}


def training_figure(curves: dict):
    """One panel per stage: training losses on the left axis, the validation metric (named as the log names
    it) and stage 1's task weights on the right one."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(curves), 1, figsize=(8, 2.8 * len(curves)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, c in zip(axes[:, 0], curves.values()):
        right = ax.twinx()  # its own colour cycle would repeat the left axis' colours: one cycle for both
        for i, (k, pts) in enumerate(c["series"].items()):
            on = ax if k.startswith("loss") else right
            on.plot([p[0] for p in pts], [p[1] for p in pts], label=k, marker="o" if k == "valid" else None,
                    markersize=3, color="black" if k == "valid" else colors[i % len(colors)],
                    linestyle="--" if k.startswith("w_") else "-")
        weights = any(k.startswith("w_") for k in c["series"])
        metric = f"validation {c['metric'] or 'metric'}" if "valid" in c["series"] else ""
        ax.set_ylabel("training loss (cross-entropy)")
        right.set_ylabel("\n".join(filter(None, [metric, "task weight (dashed)" if weights else ""])))
        ax.set_title(c["title"])
        ax.set_xlabel(c["x"])
        lines = [h for a in (ax, right) for h in a.get_legend_handles_labels()[0]]
        ax.legend(lines, [h.get_label() for h in lines], fontsize=7)
    fig.tight_layout()
    return fig


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
        _save(training_figure(curves), out / "training.png")
    plt.close("all")


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
