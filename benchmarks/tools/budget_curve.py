"""Collect the stage-2 budget runs of a learning curve and plot HR@1 / NDCG@5 against example passes.

    python benchmarks/tools/budget_curve.py runs/ml-100k-b*/metrics.json --out benchmarks/results/budget_curve

Each run directory was made by `delrec run` with a different stage-2 budget (`stage2.steps`); its
metrics.json rows carry `examples_seen` and `train_s`. Writes into --out one `<dataset>-<run>.json` per run
(the metrics.json schema plus `examples_seen`, `wall_s` and the resolved config; a run folder already named
`<dataset>-...`, such as runs/ml-100k-b2k, keeps its name: ml-100k-b2k.json), `curve.json` and `curve.png`
with the popularity and best-teacher lines of the same test file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from delrec.benchmarking import command, parser, write_result

LM_ROWS = ("lsr-only", "delrec", "delrec+hint", "delrec-no-ta", "delrec-no-rps")
TEACHERS = ("sasrec", "gru4rec", "caser")
COLORS = {"lsr-only": "C2", "delrec": "C0", "delrec+hint": "C1", "delrec-no-ta": "C4", "delrec-no-rps": "C5"}


def result_name(run: str, dataset: str) -> str:
    """`<dataset>-<run>`: the results folder holds one question's files for several datasets."""
    return run if run.startswith(f"{dataset}-") else f"{dataset}-{run}"


def collect(paths: list[Path], out: Path, leave_out: frozenset = frozenset(), cmd: str | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    curve: dict = {"rows": {}, "popularity": None, "best_teacher": None, "runs": []}
    for path in paths:
        doc = json.loads(path.read_text())
        cfg = yaml.safe_load((path.parent / "config.yaml").read_text())
        rows = doc["rows"]
        seen = max((r.get("examples_seen", 0) for n, r in rows.items() if n in LM_ROWS), default=0)
        wall = sum(r.get("train_s", 0) for n, r in rows.items() if n in LM_ROWS)
        name = path.parent.name  # --leave-out and the curve's points name the run folder
        write_result(out / f"{result_name(name, cfg['data']['dataset'])}.json",
                     doc | {"examples_seen": seen, "wall_s": wall, "config": cfg}, config=cfg, cmd=cmd)
        curve["runs"].append({"run": name, "examples_seen": seen, "wall_s": wall})
        batch = cfg["stage2"]["batch_size"] * cfg["stage2"].get("grad_accum", 1)
        for n, r in rows.items():
            if n in LM_ROWS and f"{name}/{n}" not in leave_out:
                point = {k: r[k] for k in ("examples_seen", "best_step", "hr@1", "ndcg@5", "ci95", "n") if k in r}
                # delrec's points differ in their stage 1 too: say how long it ran
                point["stage1_steps"] = cfg["stage1"]["steps"] if n != "lsr-only" else 0
                point["run"] = name
                point["valid_curve"] = [[step * batch, v] for step, v in r.get("valid_curve", [])]
                curve["rows"].setdefault(n, []).append(point)
        if "popularity" in rows:
            curve["popularity"] = {k: rows["popularity"][k] for k in ("hr@1", "ndcg@5")}
        teachers = [(rows[t]["ndcg@5"], t) for t in TEACHERS if t in rows]
        if teachers:
            best = max(teachers)[1]
            curve["best_teacher"] = {"name": best} | {k: rows[best][k] for k in ("hr@1", "ndcg@5")}
    for pts in curve["rows"].values():
        pts.sort(key=lambda p: p["examples_seen"])
    return write_result(out / "curve.json", curve, cmd=cmd)


def plot(curve: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, metric in zip(axes, ("hr@1", "ndcg@5")):
        for name, pts in curve["rows"].items():
            x = [p["examples_seen"] for p in pts]
            y = [p[metric] for p in pts]
            lo = [p["ci95"][metric][0] for p in pts] if all("ci95" in p for p in pts) else None
            hi = [p["ci95"][metric][1] for p in pts] if lo else None
            err = [[v - a for v, a in zip(y, lo)], [b - v for v, b in zip(y, hi)]] if lo else None
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name, color=COLORS.get(name))
            for p, xv, yv in zip(pts, x, y):
                if p.get("stage1_steps"):
                    ax.annotate(f"s1={p['stage1_steps']}", (xv, yv), textcoords="offset points", xytext=(4, -10),
                                fontsize=7)
        for ref, style in (("popularity", ":"), ("best_teacher", "--")):
            if curve.get(ref):
                label = ref if ref == "popularity" else f"best teacher ({curve[ref]['name']})"
                ax.axhline(curve[ref][metric], linestyle=style, color="gray", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("stage-2 training example passes")
        ax.set_ylabel(f"test {metric.upper()} (95% CI)")
        ax.grid(alpha=0.3)
    ax = axes[2]  # validation NDCG@5 against passes, every run: how far each budget had got
    for name, pts in curve["rows"].items():
        for p, style in zip(pts, ("-", "--", "-.", ":")):
            if p.get("valid_curve"):
                xs, ys = zip(*p["valid_curve"])
                ax.plot(xs, ys, marker=".", linestyle=style, color=COLORS.get(name),
                        label=f"{name} ({p['examples_seen']:,} passes)")
    ax.set_xscale("log")
    ax.set_xlabel("stage-2 training example passes")
    ax.set_ylabel("validation NDCG@5 (200 users)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = parser(__doc__, out="", out_help="the folder of the run JSONs, curve.json and curve.png "
                "(benchmarks/results/budget_curve)")
    ap.add_argument("metrics", nargs="+", type=Path)
    ap.add_argument("--leave-out", action="append", default=[], metavar="RUN/METHOD",
                    help="a row kept in its run's JSON but not drawn (e.g. one stopped early, off its budget)")
    args = ap.parse_args(argv)
    curve = collect(args.metrics, args.out, frozenset(args.leave_out),
                    cmd=command(None if argv is None else [__file__, *argv]))
    plot(curve, args.out / "curve.png")
    print(json.dumps(curve["runs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
