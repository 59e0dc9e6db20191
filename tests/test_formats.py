"""Every reader on small generated files: good input loads, each malformed input names its file and line."""

import gzip
import json
import sys
import types

import pytest

from delrec import DelrecError
from delrec.config import DataConfig
from delrec.data.formats import read_dataset
from delrec.data.split import make_split

# ---- baselines: two users with 5 interactions, one user with a single interaction (dropped) --------------

U_DATA = "1\t10\t5\t100\n1\t11\t4\t90\n1\t12\t3\t300\n1\t13\t3\t300\n1\t14\t1\t400\n" \
         "2\t10\t5\t1\n2\t12\t5\t2\n2\t13\t5\t3\n2\t14\t5\t4\n2\t15\t5\t5\n3\t10\t1\t7\n"
U_ITEM = "10|Usual Suspects, The (1995)|01-Jan-1995||url\n11|Cité des enfants perdus, La (1995)|x\n" \
         "12|Toy Story (1995)|x\n13|Heat (1995)|x\n14|Babe (1995)|x\n15|Casino (1995)|x\n"
ML100K = {"u.data": U_DATA, "u.item": U_ITEM.encode("latin-1")}
ML1M = {"ratings.dat": U_DATA.replace("\t", "::"), "movies.dat": U_ITEM.replace("|", "::").encode("latin-1")}

ID2NAME = "0::Half-Life\n1::Command &amp; Conquer\n2::Portal\n3::Dota 2\n4::Witcher, The\n"
PAD = 5


def llara_row(seq, nxt, idx=None):
    row = {"seq": seq + [PAD] * (6 - len(seq)), "len_seq": len(seq), "next": nxt}
    return json.dumps(row if idx is None else {"row_index": idx, **row}) + "\n"


LLARA = {"id2name.txt": ID2NAME,
         "train_data.jsonl": llara_row([0, 1, 2], 3, 7) + llara_row([1, 2, 3, 4], 0, 9)
         + llara_row([0, 1], 2, 11),
         "Val_data.jsonl": llara_row([1, 2, 3], 4),
         "Test_data.jsonl": llara_row([2, 3, 4, 0], 1)}

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + \
        "".join(f"u{u}\ti{i}\t5\t{10 * u + i}\n" for u in (1, 2) for i in range(5)) + "u3\ti0\t1\t5\n"
ITEM = "item_id:token\ttitle:token_seq\n" + "".join(f"i{i}\tLip Balm &amp; Gloss {i}\n" for i in range(5))
ATOMIC = {"beauty.inter": INTER, "beauty.item": ITEM}

REVIEWS = "".join(json.dumps({"reviewerID": f"R{u}", "asin": f"A{i}", "overall": 5.0,
                              "unixReviewTime": 1000 * u + (5 - i)}) + "\n" for u in (1, 2) for i in range(5))
META = "".join(repr({"asin": f"A{i}", "title": f"Soap &amp; Water {i}", "categories": [["Beauty"]]}) + "\n"
               for i in range(5)) + repr({"asin": "A9", "salesRank": {"Beauty": 1}}) + "\n"
RAW = {"reviews_Beauty_5.json.gz": gzip.compress(REVIEWS.encode()), "meta_Beauty.json": META}

SEQS = "1 0 1 2 3 4\n2 4 3 2 1 0\n"
P5 = {"sequential_data.txt": SEQS,
      "id2title.json": json.dumps({str(i): f"Cream &amp; Co {i}" for i in range(5)})}

CSV = "user,item,timestamp,title\n" + "".join(f"u{u},m{i},2020-01-0{i + 1},\"Film, {i}\"\n"
                                              for u in (1, 2) for i in range(5))
CSV_FILES = {"ratings.csv": CSV}


def write(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return folder


def load(folder, fmt, dataset="x", **kw):
    return read_dataset(DataConfig(dataset=dataset, format=fmt, **kw), folder)


# ---- good input --------------------------------------------------------------------------------------------

def test_movielens_100k_titles_ties_and_filter(tmp_path):
    ds = load(write(tmp_path, ML100K), "movielens-100k", "ml-100k")
    assert ds.users == ["1", "2"]  # user 3 (one interaction) is below min_interactions
    titles = [ds.catalog.titles[i] for i in ds.sequences[0]]
    # time 90 first; items 12 and 13 share time 300 and keep file order
    assert titles == ["La Cité des enfants perdus (1995)", "The Usual Suspects (1995)", "Toy Story (1995)",
                      "Heat (1995)", "Babe (1995)"]


def test_movielens_1m(tmp_path):
    ds = load(write(tmp_path, ML1M), "auto", "ml-1m")
    assert ds.stats()["interactions"] == 10 and ds.catalog.titles[ds.catalog.dense("10")].startswith("The ")


def test_llara_rows_become_pseudo_users_with_a_predefined_split(tmp_path):
    ds = load(write(tmp_path, LLARA), "auto", "steam")
    assert ds.users == ["train:7", "train:9", "valid:0", "test:0"]  # train:11 has len_seq 2: LLaRA drops it
    assert [ds.catalog.raw_ids[i] for i in ds.sequences[1]] == ["1", "2", "3", "4", "0"]
    assert "Command & Conquer" in ds.catalog.titles and "The Witcher" in ds.catalog.titles
    split = make_split(ds, "predefined")
    assert split.train_users == [0, 1] and split.train_sequences[0] == ds.sequences[0]
    assert [(e.user, len(e.history)) for e in split.valid + split.test] == [(2, 3), (3, 4)]
    ds.predefined.pop("test")
    with pytest.raises(DelrecError, match="no test rows"):
        make_split(ds, "predefined")


def test_llara_pickles_need_opt_in_and_pandas(tmp_path, monkeypatch):
    folder = write(tmp_path, {"id2name.txt": ID2NAME, "Val_data.df": b"\x80\x04 not really"})
    with pytest.raises(DelrecError, match="allow_pickle: true"):
        load(folder, "llara", "steam")
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(DelrecError, match="needs pandas"):
        load(folder, "llara", "steam", allow_pickle=True)

    class Frame:
        def __init__(self):
            self.index = [40, 41]

        def to_dict(self, orient):
            return [{"seq": [0, 1, 2, PAD], "len_seq": 3, "next": 3},
                    {"seq": [1, 2, 3, 4], "len_seq": 4, "next": 0}]

    monkeypatch.setitem(sys.modules, "pandas", types.SimpleNamespace(read_pickle=lambda path: Frame()))
    ds = load(folder, "llara", "steam", allow_pickle=True)
    assert ds.users == ["valid:40", "valid:41"] and ds.predefined == {"valid": [0, 1]}


def test_atomic(tmp_path):
    ds = load(write(tmp_path, ATOMIC), "auto", "beauty")
    assert ds.users == ["u1", "u2"] and ds.catalog.titles[0] == "Lip Balm & Gloss 0"


def test_amazon_raw_dumps_parse_python_literals_without_eval(tmp_path):
    ds = load(write(tmp_path, RAW), "auto", "beauty")
    assert [ds.catalog.raw_ids[i] for i in ds.sequences[0]] == ["A4", "A3", "A2", "A1", "A0"]  # by time
    assert ds.catalog.titles[0] == "Soap & Water 4"
    evil = META + "{'asin': 'A0', 'title': __import__('os').getcwd()}\n"
    with pytest.raises(DelrecError, match=r"meta_Beauty\.json:7: not a JSON object"):
        load(write(tmp_path, {"meta_Beauty.json": evil}), "amazon-raw", "beauty")


def test_amazon_item_without_title_is_counted(tmp_path):
    meta = META.replace("'title': 'Soap &amp; Water 2', ", "")
    ds = load(write(tmp_path, {**RAW, "meta_Beauty.json": meta}), "amazon-raw", "beauty")
    assert ds.stats()["items_without_titles"] == 1


def test_p5_with_id2title(tmp_path):
    ds = load(write(tmp_path / "p5", P5), "auto", "beauty")
    assert ds.stats()["interactions"] == 10 and ds.catalog.titles[0] == "Cream & Co 0"


def test_p5_datamaps_join_titles_through_asins(tmp_path):
    maps = {"id2item": {str(i): f"B{i}" for i in range(5)}, "id2user": {"1": "RA", "2": "RB"}}
    write(tmp_path / "p5", {"sequential_data.txt": SEQS, "datamaps.json": json.dumps(maps)})
    # a map keyed by other ids elsewhere must not be used for P5 ids
    write(tmp_path / "transrec", {"sequential_data.txt": SEQS})
    items = "asin\ttitle\n" + "".join(f"B{i}\tT &amp; {i}\n" for i in range(5))
    wrong = json.dumps({str(i): "WRONG" for i in range(5)})
    write(tmp_path / "derived", {"id2title.json": wrong, "items.tsv": items})
    ds = load(tmp_path, "auto", "beauty")
    assert ds.users == ["RA", "RB"] and ds.catalog.raw_ids[:2] == ["B0", "B1"]
    assert ds.catalog.titles[0] == "T & 0"


def test_csv_columns_dates_and_items_file(tmp_path):
    ds = load(write(tmp_path / "a", CSV_FILES), "auto", "csv")
    assert ds.catalog.titles[0] == "Film, 0" and ds.stats()["users"] == 2
    tsv = "uid\tmovie\twhen\n" + "".join(f"u{u}\tm{i}\t{9 - i}\n" for u in (1, 2) for i in range(5))
    items = "movie\ttitle\n" + "".join(f"m{i}\tMovie {i}\n" for i in range(5))
    folder = write(tmp_path / "b", {"log.tsv": tsv, "items.tsv": items})
    ds = load(folder, "csv", columns={"user": "uid", "item": "movie", "timestamp": "when"})
    assert ds.catalog.titles[ds.sequences[0][0]] == "Movie 4"
    with pytest.raises(DelrecError, match="data.columns: unknown key"):
        load(folder, "csv", columns={"usr": "uid"})


def test_files_in_a_single_sub_folder_and_csv_detection(tmp_path):
    write(tmp_path / "dl" / "ml-100k", ML100K)  # the GroupLens zip unpacks into ml-100k/
    assert len(load(tmp_path / "dl", "auto", "ml-100k").users) == 2
    write(tmp_path / "steam" / "llara", LLARA)
    assert len(load(tmp_path / "steam", "auto", "steam").users) == 4
    assert load(write(tmp_path / "mine", CSV_FILES), "auto", "my-shop").stats()["users"] == 2


def test_dispatch_errors(tmp_path):
    with pytest.raises(DelrecError, match="data.format"):
        load(write(tmp_path, ML100K), "parquet")
    with pytest.raises(DelrecError, match="data folder not found"):
        load(tmp_path / "missing", "auto", "ml-100k")
    with pytest.raises(DelrecError, match="no known dataset files"):
        load(write(tmp_path / "empty", {"README": "x"}), "auto", "beauty")


# ---- malformed input: one line naming the file and the line ----------------------------------------------

BAD_UTF8 = b"1\t10\t5\t100\n1\t\xff11\t4\t90\n"
CASES = [
    # (id, format, dataset, files (over the baseline), expected "file:line:", expected words)
    ("ml-truncated", "movielens-100k", ML100K, {"u.data": U_DATA + "2\t10\t5\n"}, "u.data:12:", "expected 4"),
    ("ml-time", "movielens-100k", ML100K, {"u.data": "1\t10\t5\t100\n1\t11\t4\tyesterday\n"}, "u.data:2:",
     "not a number"),
    ("ml-unknown-item", "movielens-100k", ML100K, {"u.data": "1\t10\t5\t1\n1\t99\t5\t2\n"}, "u.data:2:",
     "not in u.item"),
    ("ml-encoding", "movielens-100k", ML100K, {"u.data": BAD_UTF8}, "u.data:2:", "not valid utf-8"),
    ("ml-empty", "movielens-100k", ML100K, {"u.data": ""}, "u.data:1:", "empty file"),
    ("ml-item-truncated", "movielens-100k", ML100K, {"u.item": b"10|Heat (1995)|x\n11\n"}, "u.item:2:",
     "at least 2"),
    ("ml1m-truncated", "movielens-1m", ML1M, {"ratings.dat": "1::10::5\n"}, "ratings.dat:1:", "expected 4"),
    ("llara-truncated", "llara", LLARA, {"Val_data.jsonl": llara_row([1, 2, 3], 4)[:20] + "\n"},
     "Val_data.jsonl:1:", "invalid JSON"),
    ("llara-unknown-item", "llara", LLARA,
     {"Test_data.jsonl": llara_row([1, 2, 3], 4) + llara_row([1, 2, 8], 4)},
     "Test_data.jsonl:2:", "item 8 is not in id2name.txt"),
    ("llara-encoding", "llara", LLARA, {"id2name.txt": b"0::Half-Life\n1::Caf\xe9\n"}, "id2name.txt:2:",
     "not valid utf-8"),
    ("llara-empty", "llara", LLARA, {"Val_data.jsonl": "\n"}, "Val_data.jsonl:1:", "empty file"),
    ("llara-single", "llara", LLARA, {"Val_data.jsonl": llara_row([], 4)}, "Val_data.jsonl:1:",
     "at least one history item"),
    ("llara-padding", "llara", LLARA, {"Val_data.jsonl": llara_row([1, PAD, 3], 4)}, "Val_data.jsonl:1:",
     "padding"),
    ("atomic-truncated", "atomic", ATOMIC, {"beauty.inter": INTER + "u4\ti1\n"}, "beauty.inter:13:",
     "expected 4"),
    ("atomic-time", "atomic", ATOMIC, {"beauty.inter": INTER.replace("\t12\n", "\tnoon\n")},
     "beauty.inter:4:",
     "not a number"),
    ("atomic-unknown-item", "atomic", ATOMIC, {"beauty.item": ITEM.replace("i3\t", "i7\t")},
     "beauty.inter:5:",
     "not in beauty.item"),
    ("atomic-encoding", "atomic", ATOMIC, {"beauty.item": ITEM.encode() + b"i9\t\xc3\x28\n"},
     "beauty.item:7:",
     "not valid utf-8"),
    ("atomic-empty", "atomic", ATOMIC, {"beauty.inter": ""}, "beauty.inter:1:", "empty file"),
    ("atomic-header", "atomic", ATOMIC, {"beauty.item": "item_id\ttitle\ni0\tx\n"}, "beauty.item:1:",
     "name:type"),
    ("raw-truncated", "amazon-raw", RAW, {"reviews_Beauty_5.json.gz": gzip.compress(REVIEWS[:-30].encode())},
     "reviews_Beauty_5.json.gz:10:", "truncated"),
    ("raw-time", "amazon-raw", RAW,
     {"reviews_Beauty_5.json.gz": gzip.compress(REVIEWS.replace("1004", '"soon"').encode())},
     "reviews_Beauty_5.json.gz:2:", "not a number"),
    ("raw-unknown-item", "amazon-raw", RAW, {"meta_Beauty.json": META.replace("'A3'", "'Z3'")},
     "reviews_Beauty_5.json.gz:4:", "not in meta_Beauty.json"),
    ("raw-encoding", "amazon-raw", RAW, {"meta_Beauty.json": META.encode() + b"{'asin': '\xff'}\n"},
     "meta_Beauty.json:7:", "not valid utf-8"),
    ("raw-empty", "amazon-raw", RAW, {"meta_Beauty.json": ""}, "meta_Beauty.json:1:", "empty file"),
    ("p5-single", "p5", P5, {"sequential_data.txt": SEQS + "3 4\n"}, "sequential_data.txt:3:", "at least 2"),
    ("p5-unknown-item", "p5", P5, {"sequential_data.txt": "1 0 1 2 3 9\n"}, "sequential_data.txt:1:",
     "no title in id2title.json"),
    ("p5-encoding", "p5", P5, {"sequential_data.txt": b"1 0 1 2\n2 3 \xe9\n"}, "sequential_data.txt:2:",
     "not valid utf-8"),
    ("p5-empty", "p5", P5, {"sequential_data.txt": "\n\n"}, "sequential_data.txt:1:", "empty file"),
    ("p5-duplicate-user", "p5", P5, {"sequential_data.txt": SEQS + "1 0 1\n"}, "sequential_data.txt:3:",
     "twice"),
    ("p5-bad-map", "p5", P5, {"id2title.json": '{"0": "a",\n "1": }'}, "id2title.json:2:", "invalid JSON"),
    ("csv-truncated", "csv", CSV_FILES, {"ratings.csv": CSV + "u3,m1\n"}, "ratings.csv:12:", "expected 4"),
    ("csv-time", "csv", CSV_FILES, {"ratings.csv": CSV.replace("2020-01-03", "someday")}, "ratings.csv:4:",
     "neither a number"),
    ("csv-unknown-item", "csv", {"r.csv": "user,item\nu1,a\nu1,b\n", "items.csv": "item,title\na,A\n"}, {},
     "r.csv:3:", "not in items.csv"),
    ("csv-encoding", "csv", CSV_FILES, {"ratings.csv": CSV.encode() + b"u3,m\xff,1,x\n"}, "ratings.csv:12:",
     "not valid utf-8"),
    ("csv-empty", "csv", CSV_FILES, {"ratings.csv": ""}, "ratings.csv:1:", "empty file"),
]


@pytest.mark.parametrize("fmt,base,changes,where,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_names_file_and_line(tmp_path, fmt, base, changes, where, words):
    folder = write(tmp_path, {**base, **changes})
    with pytest.raises(DelrecError) as err:
        load(folder, fmt)
    msg = str(err.value)
    assert "\n" not in msg and where in msg and words in msg, msg


def test_single_interaction_user_in_interaction_formats_is_dropped(tmp_path):
    # interaction logs: a one-interaction user is legal data, removed by min_interactions (not an error)
    ds = load(write(tmp_path, ATOMIC), "atomic", min_interactions=2)
    assert "u3" not in ds.users


# ---- real data (skipped when ../shared/datasets is absent) ------------------------------------------------

def test_real_ml100k(shared_data):
    ds = load(shared_data / "ml-100k" / "raw", "auto", "ml-100k")
    assert (len(ds.users), ds.n_items, ds.n_interactions) == (943, 1682, 100_000)
    assert "The Usual Suspects (1995)" in ds.catalog.titles
    assert "Usual Suspects, The (1995)" not in ds.catalog.titles
    split = make_split(ds, "user-split", seed=42)
    assert (len(split.train_users), len(split.valid), len(split.test)) == (754, 94, 95)


def test_real_beauty(shared_data):
    ds = load(shared_data / "amazon-beauty", "auto", "beauty")
    assert (len(ds.users), ds.n_items, ds.n_interactions) == (22_363, 12_101, 198_502)
    assert not any("&amp;" in t for t in ds.catalog.titles) and all(ds.catalog.titles)


def test_real_steam_jsonl(shared_data):
    ds = load(shared_data / "steam" / "llara", "auto", "steam")
    assert {k: len(v) for k, v in ds.predefined.items()} == {"train": 1000, "valid": 1184}
    assert all(ds.catalog.titles) and not any("&amp;" in t for t in ds.catalog.titles)
