"""Mean and standard deviation over seeds of `metrics.json` files (the schema of `delrec.metrics.MetricsFile`).

    python benchmarks/tools/aggregate.py benchmarks/results/budget_curve/ml-100k-b2k-seed*.metrics.json \
        --out benchmarks/results/budget_curve/ml-100k-b2k-summary

Each input file is one seed; a method missing from a file is left out of that seed. Writes <out>.md (the table)
and <out>.json (per method: mean, std (sample, ddof=1), the per-seed values and n test users; and, under
`provenance`, what made it).

A seed run split over several run directories (methods run in parallel processes) is merged first:

    python benchmarks/tools/aggregate.py --merge runs/seed0-A/metrics.json runs/seed0-B/metrics.json \
        --out benchmarks/results/budget_curve/ml-100k-b2k-seed0.metrics.json --note "..."

Rows present in several parts (popularity, the distilled teacher) must agree, or the merge is refused: the parts
must come from the same data, candidate file and seed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from delrec.benchmarking import command, parser, write_result

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


def merge(files: list[Path], note: str = "", commands: tuple = ()) -> dict:
    """One metrics.json document from the parts of one seed's run."""
    docs = [json.loads(p.read_text()) for p in files]
    head = {k: docs[0].get(k) for k in ("dataset", "protocol", "candidates")}
    rows: dict = {}
    for path, doc in zip(files, docs):
        if any(doc.get(k) != v for k, v in head.items()):
            raise SystemExit(f"{path}: dataset/protocol/candidates differ from {files[0]}")
        for method, row in doc["rows"].items():
            if method in rows and any(abs(rows[method][k] - row[k]) > 1e-9 for k in KEYS):
                raise SystemExit(f"{path}: row {method!r} differs from another part ({rows[method]} vs {row})")
            rows.setdefault(method, row)
    return {**head, "note": note, "commands": list(commands), "parts": [str(p) for p in files], "rows": rows}


def to_markdown(summary: dict) -> str:
    lines = ["| method | seeds | HR@1 | HR@5 | NDCG@5 |", "|---|---|---|---|---|"]
    for method, s in summary.items():
        cells = [f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in KEYS]
        lines.append(f"| {method} | {s['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = parser(__doc__, out="", out_help="output path (without extension unless --merge)")
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--merge", action="store_true", help="merge the parts of one seed into --out")
    ap.add_argument("--note", default="")
    ap.add_argument("--command", action="append", default=[], help="a command that produced a part (repeatable)")
    args = ap.parse_args(argv)
    cmd = command(None if argv is None else [__file__, *argv])
    if args.merge:
        write_result(args.out, merge(args.files, args.note, args.command), cmd=cmd)
        return 0
    summary = aggregate(args.files)
    table = to_markdown(summary)
    write_result(args.out.with_suffix(".json"), summary, cmd=cmd, markdown=table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
