"""delrec's SASRec against RecBole 1.2.1's SASRec on ML-100K: same interactions, same split, same sizes.

    python benchmarks/quality/recbole_sasrec.py --data-dir /work/shared/datasets/ml-100k/raw --epochs 4 --threads 1 \
        [--exact-prefix] [--recbole-python /work/recbole-venv/bin/python] [--reuse-recbole OLD.json]

RecBole is never a delrec dependency: it runs in its own venv as a subprocess (`--worker`, which imports no
delrec code). The interactions are delrec's ML-100K sequences, written as RecBole atomic files whose
timestamp column is each interaction's rank in delrec's chronological order (u.data file order for ties),
so RecBole's `TO` ordering and leave-one-out (`LS: valid_and_test`) split reproduce delrec's split exactly
(checked: the script compares every user's valid and test target). Both sides: hidden 64, 2 layers, 2 heads,
feed-forward 256, max_len 50, full-softmax CE, full-ranking evaluation with history items masked, best
epoch by validation NDCG@10, the same epoch cap, the same number of CPU threads. RecBole keeps its recipe
(Adam lr 1e-3, batch 2048 prefixes, dropout 0.5); delrec runs with its own TeacherConfig defaults, with
RecBole's recipe, and (--exact-prefix) with RecBole's recipe on one window per prefix, i.e. RecBole's exact
training data and steps. Writes benchmarks/results/recbole_sasrec/ml-100k.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"hidden": 64, "layers": 2, "heads": 2, "max_len": 50}


def recbole_worker(data_path: str, epochs: int, threads: int, seed: int, out: str) -> None:
    """Runs inside the RecBole venv."""
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole reloads its own best checkpoint
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.autograd.set_detect_anomaly(False)  # recbole.model.layers switches it on globally (~2x slower)
    config = Config(model="SASRec", dataset="ml100k", config_dict={
        "data_path": data_path, "checkpoint_dir": str(Path(data_path) / "saved"), "use_gpu": False, "device": "cpu",
        "seed": seed, "reproducibility": True, "show_progress": False, "state": "WARNING",
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "MAX_ITEM_LIST_LENGTH": SIZES["max_len"],
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "train_neg_sample_args": None, "loss_type": "CE", "epochs": epochs, "stopping_step": epochs,
        "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10",
        "hidden_size": SIZES["hidden"], "inner_size": 4 * SIZES["hidden"], "n_layers": SIZES["layers"],
        "n_heads": SIZES["heads"]})
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(threads)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    torch.autograd.set_detect_anomaly(False)
    model = SASRec(config, train.dataset).to(config["device"])
    trainer = Trainer(config, model)
    curve: list[float] = []
    t0 = time.perf_counter()
    best_valid, _ = trainer.fit(train, valid, saved=True, show_progress=False, verbose=False,
                                callback_fn=lambda epoch, score: curve.append(float(score)))
    fit_seconds = time.perf_counter() - t0
    result = trainer.evaluate(test, load_best_model=True, show_progress=False)

    def targets(part):
        feat = part.dataset.inter_feat
        users = part.dataset.id2token("user_id", feat["user_id"].numpy())
        items = part.dataset.id2token("item_id", feat["item_id"].numpy())
        return {str(u): str(i) for u, i in zip(users, items)}

    doc = {"ndcg@10": float(result["ndcg@10"]), "hr@10": float(result["hit@10"]), "best_valid_ndcg@10": best_valid,
           "best_epoch": 1 + curve.index(max(curve)), "valid_curve": curve, "train_seconds": fit_seconds,
           "epochs": epochs, "train_samples": len(train.dataset), "valid_targets": targets(valid),
           "test_targets": targets(test), "torch": torch.__version__,
           "anomaly_detection": torch.is_anomaly_enabled()}
    Path(out).write_text(json.dumps(doc))


def write_atomic(dataset, folder: Path) -> None:
    """delrec sequences -> RecBole atomic .inter; timestamp = rank in delrec's order (reproduces it exactly)."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = dataset.catalog.raw_ids
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user, seq in zip(dataset.users, dataset.sequences):
        lines += [f"{user}\t{raw[i]}\t{t}" for t, i in enumerate(seq)]
    (folder / "ml100k.inter").write_text("\n".join(lines) + "\n")


# delrec rows: its own recipe, RecBole's recipe, and (optional) RecBole's recipe with RecBole's data scheme
RECBOLE_RECIPE = {"lr": 1e-3, "dropout": 0.5}  # AdamW with weight_decay 0 is Adam
VARIANTS = {
    "delrec (own recipe)": {},
    # 76 windows x ~27 targets ~ RecBole's 2048 prefixes per step
    "delrec (RecBole recipe)": {**RECBOLE_RECIPE, "batch_size": 76},
    # one window per prefix, 2048 per step: the very same training data and steps as RecBole
    "delrec (RecBole recipe, one window per prefix)": {**RECBOLE_RECIPE, "batch_size": 2048, "train_stride": 1},
}


def run_delrec(dataset, split, epochs: int, seed: int, overrides: dict) -> dict:
    from delrec.config import TeacherConfig
    from delrec.teachers.evaluation import evaluate_teacher
    from delrec.teachers.train import train_teacher

    cfg = TeacherConfig(**SIZES, epochs=epochs, patience=epochs, device="cpu", **overrides)
    t0 = time.perf_counter()
    teacher = train_teacher("sasrec", cfg, dataset, split, seed=seed, progress=False)
    seconds = time.perf_counter() - t0
    row = evaluate_teacher(teacher, split.test, None)
    return {"ndcg@10": row["full/ndcg@10"], "hr@10": row["full/hr@10"], "train_seconds": seconds,
            "best_valid_ndcg@10": teacher.info["best_valid_ndcg@10"], "best_epoch": teacher.info["best_epoch"],
            "valid_curve": [e["valid_ndcg@10"] for e in teacher.info["log"]], "epochs": epochs,
            "train_targets": teacher.info["train_examples"], "train_windows": teacher.info["train_windows"],
            "config": {k: v for k, v in cfg.__dict__.items() if k not in ("models", "topk", "device")}}


def run_recbole(dataset, split, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="recbole-") as tmp:
        write_atomic(dataset, Path(tmp) / "ml100k")
        cmd = [args.recbole_python, __file__, "--worker", tmp, str(Path(tmp) / "result.json"),
               "--epochs", str(args.epochs), "--threads", str(args.threads), "--seed", str(args.seed)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": ""})
        theirs = json.loads((Path(tmp) / "result.json").read_text())
    theirs["process_seconds"] = time.perf_counter() - t0
    raw = dataset.catalog.raw_ids
    theirs["same_targets"] = {part: sum(theirs.pop(f"{part}_targets").get(dataset.users[e.user]) == raw[e.target]
                                        for e in getattr(split, part)) for part in ("valid", "test")}
    return theirs


def worker_main(argv: list[str]) -> int:
    """`--worker DATA_PATH OUT_JSON ...` in RecBole's venv, which has no delrec: its own stdlib parser."""
    ap = argparse.ArgumentParser(prog="recbole_sasrec.py --worker")
    ap.add_argument("data_path")
    ap.add_argument("out_json")
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    args = ap.parse_args(argv)
    recbole_worker(args.data_path, args.epochs, args.threads, args.seed, args.out_json)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1:])
    from delrec.benchmarking import RESULTS, command, parser, set_threads, write_result

    ap = parser(__doc__, threads=1, out=RESULTS / "recbole_sasrec",
                out_help="the folder of ml-100k.json and .md")
    ap.add_argument("--data-dir", default="/work/shared/datasets/ml-100k/raw")
    ap.add_argument("--epochs", type=int, default=4, help="the same epoch cap for both sides")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recbole-python", default="/work/recbole-venv/bin/python")
    ap.add_argument("--exact-prefix", action="store_true",
                    help="also train delrec on one window per prefix (RecBole's data scheme; ~10 more minutes)")
    ap.add_argument("--reuse-recbole", metavar="JSON", help="take the RecBole row from an earlier results JSON")
    args = ap.parse_args(argv)

    from delrec.config import DataConfig
    from delrec.data.registry import load_dataset
    from delrec.data.split import make_split

    set_threads(args.threads)
    dataset = load_dataset(DataConfig(dataset="ml-100k", data_dir=args.data_dir))
    split = make_split(dataset, "leave-one-out")
    rows = {}
    for name, overrides in VARIANTS.items():
        if "per prefix" in name and not args.exact_prefix:
            continue
        rows[name] = run_delrec(dataset, split, args.epochs, args.seed, overrides)
        print(name, {k: v for k, v in rows[name].items() if k != "config"}, flush=True)
    if args.reuse_recbole:
        prev = json.loads(Path(args.reuse_recbole).read_text())
        if prev["epochs_cap"] != args.epochs or prev["threads"] != args.threads:
            sys.exit("--reuse-recbole: that run used another epoch cap or thread count")
        theirs = prev["rows"]["recbole"]
    else:
        theirs = run_recbole(dataset, split, args)
    rows["recbole"] = theirs
    print("recbole", theirs, flush=True)
    ratios = {name: {"ndcg@10": r["ndcg@10"] / theirs["ndcg@10"], "hr@10": r["hr@10"] / theirs["hr@10"],
                     "train_seconds": r["train_seconds"] / theirs["train_seconds"]}
              for name, r in rows.items() if name != "recbole"}
    doc = {"epochs_cap": args.epochs, "threads": args.threads, "users": len(dataset.users),
           "items": dataset.n_items, "sizes": SIZES, "rows": rows, "ratios_vs_recbole": ratios}
    cmd = command([__file__, *argv])
    table = markdown(doc, cmd, RESULTS / "teachers" / "ml-100k.json")
    write_result(args.out / "ml-100k.json", doc, cmd=cmd, markdown=table)
    print(table)
    return 0


def markdown(doc: dict, cmd: str, converged: Path) -> str:
    """The results page; `converged` is the teachers benchmark's JSON (its SASRec row, when there is one)."""
    rows, ratios = doc["rows"], doc["ratios_vs_recbole"]
    same = rows["recbole"]["same_targets"]
    lines = [
        "# SASRec: delrec vs RecBole 1.2.1 on ML-100K (leave-one-out, full ranking)", "",
        f"Command: `{cmd}` (RecBole in its own venv, never a delrec dependency).", "",
        (f"Same {doc['users']} users and {doc['items']} items, same split: RecBole's valid/test targets equal "
        f"delrec's for {same['valid']}/{doc['users']} and {same['test']}/{doc['users']} users. Same sizes "
        f"(hidden {doc['sizes']['hidden']}, {doc['sizes']['layers']} layers, {doc['sizes']['heads']} heads, "
        f"feed-forward {4 * doc['sizes']['hidden']}, max_len {doc['sizes']['max_len']}), full-softmax CE, "
        f"history items masked at evaluation, best epoch by validation NDCG@10. **Epoch cap: {doc['epochs_cap']} "
        f"for every row** (one epoch = one pass over all 97,171 training prefixes); {doc['threads']} CPU "
        "thread(s); train time = wall time of training including per-epoch validation, on a 2-core machine "
        "shared with other jobs (expect +-20% noise)."), "",
        ("| run | test NDCG@10 | test HR@10 | train s | NDCG ratio | HR ratio | time ratio | best epoch | "
        "valid NDCG@10 per epoch |"), "|---|---|---|---|---|---|---|---|---|"]
    if doc.get("note"):
        lines[4:4] = [f"Note: {doc['note']}.", ""]
    for name, r in rows.items():
        q = ratios.get(name, {"ndcg@10": 1.0, "hr@10": 1.0, "train_seconds": 1.0})
        curve = ", ".join(f"{v:.4f}" for v in r["valid_curve"])
        lines.append(f"| {name} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} | {r['train_seconds']:.0f} | "
                     f"{q['ndcg@10']:.2f} | {q['hr@10']:.2f} | {q['train_seconds']:.3f} | {r['best_epoch']} | {curve} |")
    notes = [
        ("- **Speed, own recipe.** delrec packs the training prefixes into 50-item windows: causal SASRec scores "
         "every prefix of a window in one forward pass (exactly what a separate call per prefix gives), so an epoch "
         "reads a few thousand windows instead of 97,171 prefix sequences. Every target is still trained once per "
         "epoch, with its whole history or at least 26 items of it (stride 25)."),
        ("- **Speed, same data as RecBole** (one window per prefix, 2048 per step): delrec's remaining edge comes "
         "from fused `scaled_dot_product_attention`, training tensors built once instead of RecBole's per-batch "
         "Interaction/DataLoader work, and flushing denormals (early CPU steps otherwise crawl)."),
        ("- **Quality at equal epochs.** Same blocks (post-LN, GELU, N(0, 0.02) init, LayerNorm eps 1e-12), masks, "
         "absolute positions from the oldest item, tied full-softmax CE and evaluation masking as RecBole's SASRec. "
         "delrec's own recipe (AdamW lr 2e-3, dropout 0.2, ~1,700 targets per step) converges in fewer epochs than "
         "RecBole's (Adam lr 1e-3, dropout 0.5, 2048). With RecBole's recipe and data scheme delrec still leads at "
         "the cap; we found no architectural difference that explains it, and one seed per row with a cap far from "
         "convergence cannot separate it from noise: read the capped rows as \"delrec is not worse\", not as a "
         "converged-quality gap."),
    ]
    lines += ["", "Ratios are delrec / RecBole (quality > 1 and time < 1 favour delrec).", "", "## Why", "", *notes]
    if converged.exists():
        r = json.loads(converged.read_text())["rows"]["sasrec"]
        lines.append(f"- **Converged reference.** delrec's default config with early stopping on the same split: "
                     f"test NDCG@10 {r['full/ndcg@10']:.4f}, HR@10 {r['full/hr@10']:.4f} after "
                     f"{r['train_seconds']:.0f} s ({r['epochs_run']} epochs, best {r['best_epoch']}; "
                     "benchmarks/results/teachers/ml-100k.md). RecBole was not run to convergence here (about "
                     "240 s per epoch on this machine, and it needs tens of epochs).")
    lines.append("- The RecBole row can be reused across invocations with `--reuse-recbole JSON` (same epoch cap "
                 "and threads enforced); it costs about 16 minutes per run.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
