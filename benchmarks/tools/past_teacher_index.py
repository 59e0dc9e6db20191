"""The one file of issue 24's results: benchmarks/results/past_teacher.json, per dataset and training seed, built
from past_teacher.py's summaries (past_teacher/*.json, one per run family) and seeds_pooled.py's files.

    python benchmarks/tools/past_teacher_index.py       # -> benchmarks/results/past_teacher.json

Per dataset and seed it keeps every run's rows (HR@1 / NDCG@5 as [value, low, high]), its best teacher and best
LM-based row (both chosen on validation users by past_teacher.py), the paired differences
(`best_lm_minus_best_teacher_hr@1` etc., [mean, low, high]) and the commands. `best` names, per seed, the run
whose best LM-based row has the highest validation NDCG@5 (a validation choice across runs, never a test one).
A dataset with no summary yet is listed with `measured: false`, so a missing dataset reads as missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from delrec.benchmarking import RESULTS, command, parser, write_result

DATASETS = ("ml-100k", "beauty")
KEPT = ("n_test", "best_teacher", "best_lm", "commands", "sources")


def run_entry(entry: dict) -> dict:
    out = {k: entry[k] for k in KEPT}
    out["rows"] = {name: {m: row[m] for m in ("hr@1", "ndcg@5")} for name, row in entry["rows"].items()}
    out["best_lm_valid_ndcg@5"] = entry["valid_ndcg@5"]["lm_based"][entry["best_lm"]]
    return out | {k: v for k, v in entry.items() if k.endswith(("_hr@1", "_ndcg@5"))}


def pooled_entry(doc: dict) -> dict:
    return {"seeds": doc["seeds"], "n_users": doc["n_users"],
            "pairs": {k: {m: v[m] for m in ("rows_per_seed", "hr@1", "ndcg@5")} for k, v in doc["pairs"].items()}}


def build(folder: Path) -> dict:
    summaries = {f.stem: json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))
                 if not f.name.endswith(".metrics.json")}
    datasets: dict = {d: {"measured": False, "seeds": {}, "pooled": {}} for d in DATASETS}
    for name, doc in summaries.items():
        if "datasets" in doc:  # a past_teacher.py summary
            for dataset, v in doc["datasets"].items():
                d = datasets.setdefault(dataset, {"measured": False, "seeds": {}, "pooled": {}})
                d["measured"] = True
                for seed, entry in v["seeds"].items():
                    d["seeds"].setdefault(seed, {"runs": {}})["runs"][name] = run_entry(entry)
        elif "pairs" in doc:  # a seeds_pooled.py file; its summary is named in its command, else summary.json
            source = doc.get("provenance", {}).get("command", "")
            base = next((s for s in summaries if f"past_teacher/{s}.json" in source and s != name), "summary")
            datasets.setdefault(doc["dataset"], {"measured": True, "seeds": {}, "pooled": {}})["pooled"][base] = (
                pooled_entry(doc) | {"file": f"past_teacher/{name}.json"})
    for d in datasets.values():
        for seed in d["seeds"].values():
            best = max(seed["runs"], key=lambda r: seed["runs"][r]["best_lm_valid_ndcg@5"])
            run = seed["runs"][best]
            seed["best"] = {"run": best, "row": run["best_lm"], "teacher": run["best_teacher"]} | {
                k: run[k] for k in ("best_lm_minus_best_teacher_hr@1", "best_lm_minus_best_teacher_ndcg@5")}
    return {"what": __doc__.split("\n\n")[0], "datasets": datasets}


def main(argv=None) -> int:
    ap = parser(__doc__, out=RESULTS / "past_teacher.json")
    ap.add_argument("--folder", type=Path, default=RESULTS / "past_teacher")
    args = ap.parse_args(argv)
    doc = build(args.folder)
    write_result(args.out, doc, cmd=command(None if argv is None else [__file__, *argv]))
    print(json.dumps({d: {s: v["best"] for s, v in e["seeds"].items()} for d, e in doc["datasets"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
