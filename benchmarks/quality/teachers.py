"""Teacher quality and training time: popularity, SASRec, GRU4Rec, Caser on ML-100K (leave-one-out).

    python benchmarks/quality/teachers.py --data-dir /work/shared/datasets/ml-100k/raw

Every model uses the default TeacherConfig (override with --set teacher.KEY=VALUE) and is scored on the same
seeded 20-candidate test sets (HR@1, HR@5, NDCG@5) and by full-catalogue ranking (HR@10, NDCG@10), history
items excluded. Writes benchmarks/results/teachers/<dataset>.json and .md.
"""

from __future__ import annotations

import sys
import time

import torch

from delrec.benchmarking import RESULTS, command, parser, set_threads, write_result
from delrec.config import load_config
from delrec.data.candidates import make_candidates
from delrec.data.registry import load_dataset
from delrec.data.split import make_split
from delrec.teachers.evaluation import evaluate_teacher
from delrec.teachers.train import train_teacher

COLS = [("hr@1", "HR@1"), ("hr@5", "HR@5"), ("ndcg@5", "NDCG@5"), ("full/hr@10", "full HR@10"),
        ("full/ndcg@10", "full NDCG@10")]


def main(argv=None) -> int:
    ap = parser(__doc__, threads=1, out=RESULTS / "teachers", out_help="the folder of <dataset>.json and .md")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--models", nargs="+", default=["sasrec", "gru4rec", "caser"])
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    cfg = load_config(None, [f"data.dataset={args.dataset}", f"data.data_dir={args.data_dir}", *args.set])
    dataset = load_dataset(cfg.data)
    split = make_split(dataset, cfg.data.protocol, seed=cfg.data.seed)
    sets = make_candidates(dataset, split.test, n_candidates=cfg.data.n_candidates, seed=cfg.data.seed)
    rows = {}
    for name in ["popularity", *args.models]:
        t0 = time.perf_counter()
        teacher = train_teacher(name, cfg.teacher, dataset, split, seed=args.seed, progress=not args.quiet)
        seconds = time.perf_counter() - t0
        row = evaluate_teacher(teacher, None, sets)
        row |= {"train_seconds": round(seconds, 1), "best_epoch": teacher.info.get("best_epoch"),
                "epochs_run": teacher.info.get("epochs_run"), "valid_ndcg@10": teacher.info.get("best_valid_ndcg@10")}
        rows[name] = row
        print(name, {k: round(row[k], 4) for k, _ in COLS}, f"{seconds:.0f} s", flush=True)
    pop = rows["popularity"]
    checks = {name: row["hr@1"] > pop["hr@1"] and row["full/ndcg@10"] > pop["full/ndcg@10"]
              for name, row in rows.items() if name != "popularity"}
    # The CPU and torch version are in the provenance stamp; the thread count stays (it is a setting).
    doc = {"dataset": dataset.name, "stats": dataset.stats(), "protocol": split.protocol,
           "candidates": {"n": cfg.data.n_candidates, "seed": cfg.data.seed, "examples": len(sets)},
           "train_seed": args.seed, "threads": args.threads, "teacher_config": cfg.to_dict()["teacher"],
           "beats_popularity": checks, "rows": rows}
    cmd = command(None if argv is None else [__file__, *argv])
    table = markdown(doc, cmd)
    write_result(args.out / f"{dataset.name}.json", doc, config=cfg, cmd=cmd, markdown=table)
    print(table)
    return 0 if all(checks.values()) else 1


def markdown(doc: dict, cmd: str) -> str:
    rows = doc["rows"]
    lines = [f"# Teachers on {doc['dataset']} ({doc['protocol']}, {doc['stats']['users']} test users)", "",
             f"Command: `{cmd}`", "",
             (f"20-candidate metrics on {doc['candidates']['examples']} seeded candidate sets (seed "
              f"{doc['candidates']['seed']}); full = ranking over all {doc['stats']['items']} items, history items "
              f"excluded. Training: seed {doc['train_seed']}, {doc['threads']} CPU thread(s), torch "
              f"{torch.__version__}, wall time including per-epoch validation. Interval: bootstrap 95% CI of "
              "HR@1."), "",
             "| model | " + " | ".join(h for _, h in COLS) + " | HR@1 95% CI | train s | best/run epochs |",
             "|---" * (len(COLS) + 4) + "|"]
    for name, r in rows.items():
        ci = r.get("ci95", {}).get("hr@1")
        cells = [f"{r[k]:.4f}" for k, _ in COLS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ci[0]:.3f}-{ci[1]:.3f} | {r['train_seconds']:.0f} | "
                     + (f"{r['best_epoch']}/{r['epochs_run']}" if r["epochs_run"] else "-") + " |")
    cfg = doc["teacher_config"]
    lines += ["", "Config: " + ", ".join(f"{k}={v}" for k, v in cfg.items() if k not in ("models", "device")),
              "", "Beats popularity on HR@1 and full NDCG@10: "
              + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in doc["beats_popularity"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
