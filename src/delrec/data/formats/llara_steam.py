"""LLaRA's preprocessed Steam (or any LLaRA-style dataset): `id2name.txt` + train/val/test row files.

LLaRA ships (history, next) rows, not timestamped interactions: each row becomes a pseudo-user
`<split>:<row index>` whose sequence is the history followed by the next item, and the Dataset remembers which
rows came from which file (`Dataset.predefined`), so the "predefined" protocol reproduces LLaRA's own split.
Rows may be JSONL (`{"seq": [...], "len_seq": n, "next": i}`) or LLaRA's pandas pickles (`.df`), which are
read only when `data.allow_pickle` is true because unpickling runs code from the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from delrec import DelrecError
from delrec.data.catalog import clean_title
from delrec.data.formats.files import fail, read_lines
from delrec.data.sequences import Dataset, build_dataset

SPLITS = {"train": "train_data", "valid": "val_data", "test": "test_data"}
MIN_LEN_SEQ = 3  # LLaRA keeps rows with len_seq >= 3 (its data loaders filter the rest out)


def read_id2name(path: Path) -> dict[str, str]:
    titles: dict[str, str] = {}
    for n, line in enumerate(read_lines(path, "utf-8", what="id::title lines"), 1):
        if not line.strip():
            continue
        item, sep, title = line.partition("::")
        if not sep or not item.strip():
            raise fail(path, n, "expected 'id::title'")
        if item.strip() in titles:
            raise fail(path, n, f"item id {item.strip()!r} appears twice")
        titles[item.strip()] = clean_title(title)
    return titles


def split_file(folder: Path, split: str, allow_pickle: bool) -> Path | None:
    """The rows file of one split: `<stem>.jsonl` (or a unique `<stem>*.jsonl`), else `<stem>.df`."""
    stem = SPLITS[split]
    names = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().startswith(stem))
    jsonl = [p for p in names if p.name.lower().endswith(".jsonl")]
    exact = [p for p in jsonl if p.name.lower() == stem + ".jsonl"]
    if exact or len(jsonl) == 1:
        return (exact or jsonl)[0]
    if jsonl:
        names = ", ".join(p.name for p in jsonl)
        raise DelrecError(f"{folder}: several {split} row files ({names}); keep one")
    pickles = [p for p in names if p.name.lower() == stem + ".df"]
    if pickles and not allow_pickle:
        raise DelrecError(f"{pickles[0]}: is a pandas pickle, which can run code when read; set "
                          f"data.allow_pickle: true if you trust it, or provide {stem}.jsonl")
    return pickles[0] if pickles else None


def jsonl_rows(path: Path):
    for n, line in enumerate(read_lines(path, "utf-8", what="one JSON row per line"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise fail(path, n, f"invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise fail(path, n, "expected a JSON object with seq, len_seq and next")
        yield n, row.get("row_index", n - 1), row


def pickle_rows(path: Path):
    try:
        import pandas as pd
    except ImportError:
        raise DelrecError(f"{path}: reading LLaRA .df pickles needs pandas (pip install pandas), or "
                          "convert the rows to JSONL") from None
    try:
        frame = pd.read_pickle(path)
        index = list(frame.index)
        records = frame.to_dict("records")
    except Exception as e:  # noqa: BLE001 - a broken pickle can raise anything
        raise fail(path, None, f"cannot read pandas pickle ({type(e).__name__}: {e})") from None
    if not records:
        raise fail(path, 1, "empty file, expected LLaRA rows")
    for n, (idx, row) in enumerate(zip(index, records), 1):
        yield n, idx, row


def parse_row(path: Path, n: int, row: dict, titles: dict[str, str], pad: int) -> list[str] | None:
    """History + next as raw ids, or None for rows LLaRA itself drops (len_seq < 3)."""
    try:
        seq, len_seq, nxt = list(row["seq"]), int(row["len_seq"]), int(row["next"])
        seq = [int(x) for x in seq]
    except KeyError as e:
        raise fail(path, n, f"missing field {e.args[0]!r} (rows need seq, len_seq and next)") from None
    except (TypeError, ValueError) as e:
        raise fail(path, n, f"seq must be a list of item ids and len_seq/next integers ({e})") from None
    if not 1 <= len_seq <= len(seq):
        raise fail(path, n, f"len_seq {len_seq} is outside 1..{len(seq)} "
                            "(a row needs at least one history item)")
    history = seq[:len_seq]
    if pad in history:
        raise fail(path, n, f"padding id {pad} inside the first len_seq={len_seq} items")
    for item in history + [nxt]:
        if str(item) not in titles:
            raise fail(path, n, f"item {item} is not in id2name.txt")
    if len_seq < MIN_LEN_SEQ:
        return None
    return [str(x) for x in history + [nxt]]


def read_llara(folder: Path, *, name: str = "steam", allow_pickle: bool = False) -> Dataset:
    folder = Path(folder)
    title_file = folder / "id2name.txt"
    titles = read_id2name(title_file)
    pad = len(titles)  # LLaRA pads histories with the number of items
    files = {s: split_file(folder, s, allow_pickle) for s in SPLITS} if folder.is_dir() else {}
    files = {s: p for s, p in files.items() if p is not None}
    if not files:
        raise DelrecError(f"{folder}: no LLaRA row files (expected train_data.jsonl, Val_data.jsonl, "
                          "Test_data.jsonl, or .df pickles with data.allow_pickle: true)")
    records: list[tuple[str, str, float]] = []
    seen: set[str] = set()
    for split, path in files.items():
        rows = pickle_rows(path) if path.suffix == ".df" else jsonl_rows(path)
        for n, idx, row in rows:
            items = parse_row(path, n, row, titles, pad)
            if items is None:
                continue
            user = f"{split}:{idx}"
            if user in seen:
                raise fail(path, n, f"row index {idx} appears twice")
            seen.add(user)
            records.extend((user, item, float(t)) for t, item in enumerate(items))
    source = ", ".join(str(p) for p in files.values())
    ds = build_dataset(name, records, titles, min_interactions=1, domain="game", source=source)
    ds.predefined = {s: [i for i, u in enumerate(ds.users) if u.startswith(s + ":")] for s in files}
    return ds
