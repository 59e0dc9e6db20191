"""Protocols, candidate files, the synthetic world, build_dataset and `prepare` (download path offline)."""

import io
import json
import urllib.request
import zipfile

import numpy as np
import pytest

from delrec import DelrecError
from delrec.config import DataConfig
from delrec.data import prepare as prep
from delrec.data.candidates import make_candidates, read_candidates, write_candidates
from delrec.data.catalog import clean_title, without_year
from delrec.data.sequences import build_dataset
from delrec.data.split import make_split
from delrec.data.synthetic import make_world
from delrec.metrics import ranks_from_scores, summarize


@pytest.fixture(scope="module")
def ds():
    return make_world(200, 120, seed=3)


# ---- build_dataset and titles ------------------------------------------------------------------------------

def test_build_dataset_sorts_stably_filters_and_remaps():
    recs = [("a", "x", 2.0), ("a", "y", 1.0), ("a", "z", 1.0), ("b", "q", 0.0), ("a", "w", 3.0)]
    d = build_dataset("t", recs, {k: k.upper() for k in "xyzqw"}, min_interactions=2)
    assert d.users == ["a"] and [d.catalog.raw_ids[i] for i in d.sequences[0]] == ["y", "z", "x", "w"]
    assert d.catalog.raw_ids == ["y", "z", "x", "w"] and d.stats()["interactions"] == 4
    with pytest.raises(DelrecError, match="no title"):
        build_dataset("t", recs, {}, min_interactions=1)
    with pytest.raises(DelrecError, match="at least 9"):
        build_dataset("t", recs, {k: k for k in "xyzqw"}, min_interactions=9)


@pytest.mark.parametrize("raw,clean", [
    ("Usual Suspects, The (1995)", "The Usual Suspects (1995)"), ("Enfer, L' (1994)", "L'Enfer (1994)"),
    ("Bath &amp;amp;  Body", "Bath & Body"), ("Hello,  World", "Hello, World"), ("Man, A", "A Man")])
def test_clean_title(raw, clean):
    assert clean_title(raw) == clean


@pytest.mark.parametrize("title,short", [
    ("Toy Story (1995)", "Toy Story"), ("Nosferatu (Nosferatu, eine Symphonie des Grauens) (1922)",
     "Nosferatu (Nosferatu, eine Symphonie des Grauens)"), ("Blade Runner 2049", "Blade Runner 2049"),
    ("Lipstick (Matte)", "Lipstick (Matte)"), ("2001: A Space Odyssey (1968)", "2001: A Space Odyssey")])
def test_without_year_drops_only_a_trailing_release_year(title, short):
    assert without_year(title) == short


def test_prompts_without_years():
    import random

    from delrec.data.catalog import Catalog
    from delrec.prompts.examples import PromptBuilder

    catalog = Catalog()
    for i in range(30):
        catalog.add(f"m{i}", f"Movie {i} ({1970 + i})")
    history = tuple(range(6))
    keep, drop = (PromptBuilder(catalog, "movie", n_candidates=8, title_years=y) for y in (True, False))
    a, b = keep.ta(history, 7, random.Random(0)), drop.ta(history, 7, random.Random(0))
    assert a.items == b.items and a.label == b.label  # the same example in shorter text
    assert b.candidates == tuple(f"Movie {i}" for i in b.items)
    assert "(197" in a.prompt and "(19" not in b.prompt


def test_fingerprint_tracks_order(ds):
    other = make_world(200, 120, seed=3)
    assert other.fingerprint() == ds.fingerprint()
    other.sequences[0] = other.sequences[0][::-1]
    assert other.fingerprint() != ds.fingerprint()


# ---- protocols ---------------------------------------------------------------------------------------------

def test_leave_one_out_keeps_targets_out_of_training(ds):
    split = make_split(ds, "leave-one-out")
    assert len(split.valid) == len(split.test) == len(ds.users)
    for u, seq in enumerate(ds.sequences):
        assert split.train_sequences[u] == seq[:-2]
        assert split.valid[u].target == seq[-2] and split.valid[u].history == tuple(seq[:-2])
        assert split.test[u].target == seq[-1] and split.test[u].history == tuple(seq[:-1])
    for ex in split.train:  # LM training examples come from training positions only
        seq = split.train_sequences[ex.user]
        assert seq[len(ex.history)] == ex.target and tuple(seq[:len(ex.history)]) == ex.history


def _users(split):
    return split.train_users, [e.user for e in split.valid], [e.user for e in split.test]


def test_user_split_is_seeded_and_disjoint(ds):
    a, b, c = (make_split(ds, "user-split", seed=s) for s in (7, 7, 8))
    users = _users
    assert users(a) == users(b) and users(a) != users(c)
    tr, va, te = map(set, users(a))
    assert not (tr & va or tr & te or va & te) and len(tr | va | te) == len(ds.users)
    assert (len(tr), len(va), len(te)) == (160, 20, 20)
    assert all(e.target == ds.sequences[e.user][-1] for e in a.test)


def test_predefined_protocol_needs_a_shipped_split(ds):
    with pytest.raises(DelrecError, match="predefined"):
        make_split(ds, "predefined")
    with pytest.raises(DelrecError, match="unknown protocol"):
        make_split(ds, "random")
    ds2 = make_world(30, 48, seed=1)
    ds2.predefined = {"train": list(range(20)), "valid": [20, 21, 22], "test": list(range(23, 30))}
    split = make_split(ds2, "predefined")
    assert len(split.train_sequences) == 20 and [e.user for e in split.valid] == [20, 21, 22]
    assert split.test[0].target == ds2.sequences[23][-1]


# ---- candidates --------------------------------------------------------------------------------------------

def test_candidates_are_valid_and_byte_identical_across_runs(ds, tmp_path):
    split = make_split(ds, "leave-one-out")
    for name in ("a.jsonl", "b.jsonl"):
        sets = make_candidates(ds, split.test, n_candidates=20, seed=5)
        write_candidates(tmp_path / name, ds, sets, seed=5, protocol="leave-one-out", split="test")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    for c in sets:
        full = set(ds.sequences[c.user])
        negatives = [x for x in c.candidates if x != c.target]
        assert len(c.candidates) == 20 and len(set(c.candidates)) == 20
        assert c.candidates.count(c.target) == 1 and not full & set(negatives)
    other = make_candidates(ds, split.test, n_candidates=20, seed=6)
    assert [c.candidates for c in other] != [c.candidates for c in sets]
    back = read_candidates(tmp_path / "a.jsonl", ds)
    assert back == sets
    meta = json.loads((tmp_path / "a.jsonl.meta.json").read_text())
    assert meta["fingerprint"] == ds.fingerprint() and meta["count"] == len(sets)


def test_random_ranker_matches_chance(ds):
    split = make_split(ds, "leave-one-out")
    sets = make_candidates(ds, split.test, n_candidates=20, seed=0)
    targets = np.array([c.target_index for c in sets] * 100)  # 20,000 examples
    scores = np.random.default_rng(0).random((len(targets), 20))
    row = summarize(ranks_from_scores(scores, targets), n_boot=0)
    assert abs(row["hr@1"] - 0.05) < 0.01 and abs(row["hr@5"] - 0.25) < 0.015
    assert abs(row["ndcg@5"] - 0.1474) < 0.01


def test_read_candidates_checks_fingerprint_and_accepts_outside_files(ds, tmp_path):
    split = make_split(ds, "leave-one-out")
    sets = make_candidates(ds, split.test[:5], seed=1)
    write_candidates(tmp_path / "c.jsonl", ds, sets, seed=1, protocol="leave-one-out", split="test")
    changed = make_world(200, 120, seed=4)
    with pytest.raises(DelrecError, match="fingerprint"):
        read_candidates(tmp_path / "c.jsonl", changed)
    raw = ds.catalog.raw_ids
    c = sets[0]
    row = {"user": ds.users[c.user], "history": [raw[i] for i in c.history],
           "candidates": [raw[i] for i in c.candidates], "target": raw[c.target]}
    (tmp_path / "outside.jsonl").write_text(json.dumps(row) + "\n")  # no .meta.json: made outside delrec
    assert read_candidates(tmp_path / "outside.jsonl", ds) == [c]
    (tmp_path / "bad.jsonl").write_text(json.dumps({**row, "target": "nope"}) + "\n")
    with pytest.raises(DelrecError, match=r"bad\.jsonl:1:"):
        read_candidates(tmp_path / "bad.jsonl", ds)


def test_candidates_need_enough_items():
    tiny = make_world(5, 8, seed=0)
    split = make_split(tiny, "leave-one-out")
    with pytest.raises(DelrecError, match="negatives"):
        make_candidates(tiny, split.test, n_candidates=20)


def test_synthetic_world_is_seeded_and_titled():
    a, b = make_world(50, 48, seed=9), make_world(50, 48, seed=9)
    assert a.sequences == b.sequences and all(a.catalog.titles)
    assert all(8 <= len(s) <= 20 for s in a.sequences)


# ---- prepare: the ML-100K download path, without a network ------------------------------------------------

class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _zip(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(f"ml-100k/{name}", data)
    return buf.getvalue()


def test_prepare_offline_says_where_to_put_the_files(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DelrecError) as err:
        prep.prepare(DataConfig(dataset="ml-100k", data_dir=str(tmp_path / "ml")))
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "ml") in msg and "u.data" in msg and "ml-100k.zip" in msg
    assert not (tmp_path / "ml").exists()


def test_prepare_rejects_a_download_with_the_wrong_checksum(tmp_path, monkeypatch):
    blob = _zip({"u.data": "1\t1\t5\t1\n", "u.item": "1|A|x\n"})
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: FakeResponse(blob))
    with pytest.raises(DelrecError, match="unexpected md5"):
        prep.prepare(DataConfig(dataset="ml-100k", data_dir=str(tmp_path / "ml")))
    assert not (tmp_path / "ml").exists()


def test_prepare_downloads_into_the_cache(shared_data, tmp_path, monkeypatch):
    raw = shared_data / "ml-100k" / "raw"
    blob = _zip({name: (raw / name).read_bytes() for name in ("u.data", "u.item", "README")})
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: FakeResponse(blob))
    monkeypatch.setenv("DELREC_DATA", str(tmp_path))
    stats = prep.prepare(DataConfig(dataset="ml-100k"))
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100_000)
    assert stats["items_without_titles"] == 0 and (tmp_path / "ml-100k" / "README").is_file()


def test_prepare_reports_stats(tmp_path):
    stats = prep.prepare(DataConfig(dataset="synthetic", synthetic_users=20, synthetic_items=24))
    assert stats["users"] == 20 and {"items", "interactions", "mean_sequence_length",
                                     "items_without_titles"} <= set(stats)


def test_the_hint_teacher_never_sees_a_training_target():
    """delrec+hint's training hints come from a teacher trained on `before_training_targets(split)`: no
    sequence it trains on holds the target of any LM training example of that user (nor anything after)."""
    from helpers import world

    from delrec.data.split import before_training_targets, make_split

    ds, _ = world()
    split = make_split(ds, "leave-one-out", seed=0, max_train_examples=0, train_examples_per_user=3)
    cut = before_training_targets(split)
    seqs = dict(zip(cut.train_users, cut.train_sequences))
    full = dict(zip(split.train_users, split.train_sequences))
    assert split.train and all(len(seqs[e.user]) <= len(e.history) for e in split.train)
    assert all(seqs[u] == full[u][:len(seqs[u])] for u in seqs)  # a prefix of what the full teacher saw
    users = {e.user for e in split.train}
    assert all(seqs[u] == full[u] for u in full if u not in users)
    assert cut.train == split.train and cut.valid == split.valid and cut.test == split.test
