"""HR/NDCG over candidate scores: pessimistic ties, hand-computed values, bootstrap CIs, metrics.json."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from delrec.metrics import MetricsFile, format_table, ndcg_hr_full, per_example, ranks_from_scores, summarize


def test_all_equal_scores_rank_last():
    assert ranks_from_scores(np.zeros((3, 20)), [0, 7, 19]).tolist() == [20, 20, 20]


def test_ties_and_nan_count_against_the_target():
    scores = [[0.5, 0.5, 0.1], [0.2, 0.9, 0.3], [1.0, float("nan"), 0.0], [3.0, 2.0, 1.0]]
    assert ranks_from_scores(scores, [0, 2, 0, 0]).tolist() == [2, 2, 2, 1]


def test_hand_computed_values():
    ranks = np.array([1, 2, 3, 6])
    values = per_example(ranks, ks=(1, 5))
    assert values["hr@1"].tolist() == [1, 0, 0, 0] and values["hr@5"].tolist() == [1, 1, 1, 0]
    assert values["ndcg@5"] == pytest.approx([1.0, 1 / math.log2(3), 0.5, 0.0])
    row = summarize(ranks, n_boot=0)
    assert row["hr@1"] == 0.25 and row["hr@5"] == 0.75 and row["n"] == 4
    assert row["ndcg@5"] == pytest.approx((1 + 0.6309297535714575 + 0.5) / 4)
    assert "ci95" not in row
    full = ndcg_hr_full([1, 4, 11], k=10)
    assert full["full/hr@10"] == pytest.approx(2 / 3)
    assert full["full/ndcg@10"] == pytest.approx((1 + 1 / math.log2(5)) / 3)


def test_scores_to_metrics_end_to_end():
    scores = np.array([[0.1, 0.9, 0.3], [0.8, 0.1, 0.2]])
    row = summarize(ranks_from_scores(scores, [1, 2]), ks=(1, 2), n_boot=0)
    assert row["hr@1"] == 0.5 and row["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)


def test_bootstrap_interval_contains_the_mean_and_is_seeded():
    ranks = np.random.default_rng(1).integers(1, 21, size=300)
    a, b = summarize(ranks, n_boot=500, seed=3), summarize(ranks, n_boot=500, seed=3)
    assert a == b
    for name in ("hr@1", "hr@5", "ndcg@5"):
        lo, hi = a["ci95"][name]
        assert lo <= a[name] <= hi and hi - lo < 0.2


def test_empty_and_bad_shapes():
    row = summarize(np.array([], dtype=int))
    assert row["n"] == 0 and math.isnan(row["hr@1"])
    with pytest.raises(ValueError):
        ranks_from_scores(np.zeros(5), [0])


def test_metrics_file_and_table(tmp_path):
    mf = MetricsFile(tmp_path / "metrics.json", dataset="ml-100k", protocol="user-split")
    mf.add("random", {"hr@1": 0.05, "hr@5": 0.25, "n": 95})
    again = MetricsFile(tmp_path / "metrics.json")
    assert again.data["dataset"] == "ml-100k" and again.rows["random"]["n"] == 95
    table = format_table(again.rows)
    assert "| random | 0.0500 | 0.2500 | - | 95 |" in table.splitlines()


def _load_aggregate():
    import importlib.util

    spec = importlib.util.spec_from_file_location("aggregate", Path(__file__).resolve().parents[1]
                                                  / "benchmarks" / "tools" / "aggregate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_aggregate_merges_parts_and_averages_seeds(tmp_path):
    agg = _load_aggregate()

    def write(name, rows):
        path = tmp_path / name
        path.write_text(json.dumps({"dataset": "d", "protocol": "leave-one-out", "candidates": 20, "rows": rows}))
        return path

    def row(v):
        return {"hr@1": v, "hr@5": v, "ndcg@5": v, "n": 10}

    a = write("a.json", {"popularity": row(0.2), "delrec": row(0.1)})
    b = write("b.json", {"popularity": row(0.2), "delrec-no-ta": row(0.3)})
    merged = agg.merge([a, b])
    assert set(merged["rows"]) == {"popularity", "delrec", "delrec-no-ta"}
    with pytest.raises(SystemExit, match="popularity"):
        agg.merge([a, write("c.json", {"popularity": row(0.25)})])
    seeds = [write(f"s{i}.json", {"delrec": row(v)}) for i, v in enumerate((0.1, 0.2, 0.3))]
    summary = agg.aggregate(seeds)["delrec"]
    assert summary["seeds"] == 3 and summary["hr@1"]["mean"] == pytest.approx(0.2)
    assert summary["hr@1"]["std"] == pytest.approx(0.1)  # sample std (ddof=1)
