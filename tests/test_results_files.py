"""Committed results re-derive from what is committed: every paired interval in past_teacher/'s summaries, in
its paired_diff.py files, in distillation/*.json and in <dataset>/preset.json is what `paired_difference` gives
from the per-example ranks of the metrics files it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from delrec.metrics import paired_difference

ROOT = Path(__file__).resolve().parents[1]
PAST = ROOT / "benchmarks" / "results" / "past_teacher"
PAIRS = {"best_lm_minus_best_teacher": ("best_teacher", "best_lm"),
         "teacher_ensemble_minus_best_teacher": ("best_teacher", "teacher-ensemble"),
         "best_lm_minus_teacher_ensemble": ("teacher-ensemble", "best_lm"),
         "delrec_minus_lsr_only": ("lsr-only", "delrec")}


def check_pairs_and_rows(entry: dict, rows: dict) -> None:
    """Every paired difference of `entry` and every row's HR@1 re-derive from the stored ranks of `rows`."""
    for name, pair in entry["paired"].items():
        d = paired_difference(rows[pair["a"]]["ranks"], rows[pair["b"]]["ranks"], n_boot=10000)
        for metric in ("hr@1", "ndcg@5"):
            assert pair[metric] == pytest.approx([d[metric]["b_minus_a"], *d[metric]["ci95"]], abs=6e-5), name
    for name, row in entry["rows"].items():
        assert row["hr@1"][0] == pytest.approx(rows[name]["hr@1"], abs=6e-5)
        assert len(rows[name]["ranks"]) == rows[name]["n"] == entry["n_test"]


def past_teacher_docs() -> list[tuple[str, dict]]:
    """past_teacher.py's summaries (summary.json and the runs kept apart from it, e.g. user-upper.json)."""
    docs = [(f.stem, json.loads(f.read_text())) for f in sorted(PAST.glob("*.json"))
            if not f.name.endswith(".metrics.json")]
    return [(name, doc) for name, doc in docs if "datasets" in doc]


def entries():
    return [(f"{name}-{d}", s, e) for name, doc in past_teacher_docs()
            for d, v in doc["datasets"].items() for s, e in v["seeds"].items()]


def test_past_teacher_has_its_summaries():
    assert {"summary", "user-upper", "residual-upper"} <= {name for name, _ in past_teacher_docs()}


@pytest.mark.parametrize(("summary", "seed", "entry"), entries(), ids=lambda x: x if isinstance(x, str) else "")
def test_past_teacher_intervals_come_from_the_stored_ranks(summary, seed, entry):
    rows = {}
    for source in entry["sources"]:
        rows |= {k: v for k, v in json.loads((ROOT / source).read_text())["rows"].items() if k not in rows}
    checked = 0
    for key, (a, b) in PAIRS.items():
        if f"{key}_hr@1" not in entry:
            continue
        a, b = entry.get(a, a), entry.get(b, b)  # "best_teacher" -> the teacher it names
        d = paired_difference(rows[a]["ranks"], rows[b]["ranks"], n_boot=10000)
        for metric in ("hr@1", "ndcg@5"):
            want = [d[metric]["b_minus_a"], *d[metric]["ci95"]]
            assert entry[f"{key}_{metric}"] == pytest.approx(want, abs=6e-5), (key, metric)
            checked += 1
    check_pairs_and_rows(entry, rows)
    assert checked >= 2


def distillation_entries():
    return [(f.stem, s, budget, e) for f in sorted((ROOT / "benchmarks" / "results" / "distillation").glob("*.json"))
            if not f.name.endswith(".metrics.json")
            for d in json.loads(f.read_text())["datasets"].values() for s, budgets in d["seeds"].items()
            for budget, e in budgets.items()]


@pytest.mark.parametrize(("dataset", "seed", "budget", "entry"), distillation_entries(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_distillation_intervals_come_from_the_stored_ranks(dataset, seed, budget, entry):
    rows = json.loads((ROOT / entry["source"]).read_text())["rows"]
    assert "delrec_minus_lsr_only" in entry["paired"]
    for name, pair in entry["paired"].items():
        a_rows = json.loads((ROOT / pair["a_source"]).read_text())["rows"]
        d = paired_difference(a_rows[pair["a"]]["ranks"], rows[pair["b"]]["ranks"], n_boot=10000)
        for metric in ("hr@1", "ndcg@5"):
            assert pair[metric] == pytest.approx([d[metric]["b_minus_a"], *d[metric]["ci95"]], abs=6e-5), name
    for name, row in entry["rows"].items():
        assert row["hr@1"][0] == pytest.approx(rows[name]["hr@1"], abs=6e-5)
        assert len(rows[name]["ranks"]) == entry["n_test"]


def preset_files():
    return sorted((ROOT / "benchmarks" / "results").glob("*/preset.json"))


@pytest.mark.parametrize("path", preset_files(), ids=lambda p: p.parent.name)
def test_preset_run_intervals_come_from_the_stored_ranks(path):
    """benchmarks/tools/preset_run.py: each row and paired difference re-derives from the run's stored ranks."""
    entry = json.loads(path.read_text())
    rows = json.loads((ROOT / entry["source"]).read_text())["rows"]
    assert "delrec_minus_lsr_only" in entry["paired"]
    check_pairs_and_rows(entry, rows)
    assert entry["time"]["elapsed_s"] == pytest.approx(sum(entry["time"]["part_seconds"].values()), rel=0.2)


def paired_diff_files():
    return sorted(f for f in (ROOT / "benchmarks" / "results").rglob("*-vs-*.json")
                  if all(":" in json.loads(f.read_text()).get(k, "") for k in ("a", "b")))


def stored_ranks(arg: str) -> list[int]:
    path, _, method = arg.rpartition(":")
    return json.loads((ROOT / path).read_text())["rows"][method]["ranks"]


@pytest.mark.parametrize("path", paired_diff_files(), ids=lambda p: p.name)
def test_paired_diff_files_come_from_the_stored_ranks(path):
    """benchmarks/tools/paired_diff.py FILE.json:METHOD outputs: each difference re-derives from both ranks."""
    doc = json.loads(path.read_text())
    d = paired_difference(stored_ranks(doc["a"]), stored_ranks(doc["b"]), n_boot=10000)
    for metric in ("hr@1", "ndcg@5"):
        got = doc["metrics"][metric]
        assert [got["b_minus_a"], *got["ci95"]] == pytest.approx([d[metric]["b_minus_a"], *d[metric]["ci95"]],
                                                                abs=6e-5), metric


def test_past_teacher_json_is_the_summaries_per_dataset_and_seed():
    """benchmarks/results/past_teacher.json (past_teacher_index.py) holds what the summaries hold, for every
    dataset the issue names, and each seed's `best` is its runs' best validation choice."""
    index = json.loads((PAST.parent / "past_teacher.json").read_text())["datasets"]
    assert {"ml-100k", "beauty"} <= set(index)
    for name, doc in past_teacher_docs():
        for dataset, v in doc["datasets"].items():
            assert index[dataset]["measured"]
            for seed, entry in v["seeds"].items():
                run = index[dataset]["seeds"][seed]["runs"][name]
                assert run["best_lm"] == entry["best_lm"] and run["best_teacher"] == entry["best_teacher"]
                assert run["best_lm_minus_best_teacher_hr@1"] == entry["best_lm_minus_best_teacher_hr@1"]
                assert {r: run["rows"][r]["hr@1"] for r in run["rows"]} == {
                    r: row["hr@1"] for r, row in entry["rows"].items()}
    for dataset in index.values():
        for seed in dataset["seeds"].values():
            valid = {r: run["best_lm_valid_ndcg@5"] for r, run in seed["runs"].items()}
            assert seed["best"]["run"] == max(valid, key=valid.get)
            best = seed["runs"][seed["best"]["run"]]
            assert seed["best"]["best_lm_minus_best_teacher_ndcg@5"] == best["best_lm_minus_best_teacher_ndcg@5"]


def pooled_files():
    return sorted(f for f in PAST.glob("*pooled*.json"))


@pytest.mark.parametrize("path", pooled_files(), ids=lambda p: p.name)
def test_pooled_seed_differences_come_from_the_stored_ranks(path):
    """seeds_pooled.py: each pair's mean is the per-user difference averaged over the seeds, from the ranks of
    the rows each seed's summary names; its interval is a user-resampling bootstrap of it (redrawn here)."""
    import numpy as np

    from delrec.metrics import per_example

    doc = json.loads(path.read_text())
    words = doc["provenance"]["command"].split()
    summary = ROOT / words[words.index("--summary") + 1] if "--summary" in words else PAST / "summary.json"
    seeds = json.loads(summary.read_text())["datasets"][doc["dataset"]]["seeds"]
    assert sorted(seeds) == doc["seeds"] and len(seeds) >= 2
    for pair in doc["pairs"].values():
        for metric in ("hr@1", "ndcg@5"):
            per_seed = []
            for s, (a, b) in pair["rows_per_seed"].items():
                rows = {}
                for source in seeds[s]["sources"]:
                    rows |= {k: v for k, v in json.loads((ROOT / source).read_text())["rows"].items() if k not in rows}
                per_seed.append(per_example(np.asarray(rows[b]["ranks"]))[metric]
                                - per_example(np.asarray(rows[a]["ranks"]))[metric])
            d = np.mean(per_seed, axis=0)
            boots = d[np.random.default_rng(1).integers(0, len(d), size=(4000, len(d)))].mean(1)
            assert pair[metric][0] == pytest.approx(d.mean(), abs=6e-5)
            assert pair[metric][1:] == pytest.approx(np.percentile(boots, [2.5, 97.5]), abs=0.006)
