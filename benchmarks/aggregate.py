"""Mean and standard deviation over seeds of `metrics.json` files (the schema of `delrec.metrics.MetricsFile`).

    python benchmarks/aggregate.py benchmarks/results/ml-100k/loo-seed*.metrics.json \
        --out benchmarks/results/ml-100k/loo-summary

Each input file is one seed; a method missing from a file is left out of that seed. Writes <out>.md (the table)
and <out>.json (per method: mean, std (sample, ddof=1), the per-seed values and n test users).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

KEYS = ("hr@1", "hr@5", "ndcg@5")


def load_rows(path: Path) -> dict:
    data = json.loads(path.read_text())
    if "rows" not in data:
        raise SystemExit(f"{path}: not a delrec metrics.json (no 'rows')")
    return data["rows"]


def aggregate(files: list[Path]) -> dict:
    per_method: dict[str, dict] = {}
    for path in files:
        for method, row in load_rows(path).items():
            entry = per_method.setdefault(method, {"values": {k: [] for k in KEYS}, "n": set(), "files": []})
            for k in KEYS:
                entry["values"][k].append(float(row[k]))
            entry["n"].add(int(row.get("n", 0)))
            entry["files"].append(path.name)
    out = {}
    for method, entry in per_method.items():
        vals = entry["values"]
        out[method] = {
            "seeds": len(entry["files"]), "n": sorted(entry["n"]), "files": entry["files"],
            **{k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "values": v}
               for k, v in vals.items()},
        }
    return out


def to_markdown(summary: dict) -> str:
    lines = ["| method | seeds | HR@1 | HR@5 | NDCG@5 |", "|---|---|---|---|---|"]
    for method, s in summary.items():
        cells = [f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in KEYS]
        lines.append(f"| {method} | {s['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="output path without extension")
    args = ap.parse_args(argv)
    summary = aggregate(args.files)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    table = to_markdown(summary)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
