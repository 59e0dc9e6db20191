"""P5 / TransRec sequence files with a title map.

`sequential_data.txt` with `user item item ...` per line, oldest first, in the data folder or one of its
sub-folders. Titles come from `id2title.json` ({item id: title}), or, when `datamaps.json` sits next to the
sequences (P5), from its `id2item` ASINs joined with an ASIN-keyed title file (`items.tsv` with asin/title
columns, or an Amazon `meta_<Cat>.json[.gz]`, read by `amazon.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

from delrec import DelrecError
from delrec.data.catalog import clean_title
from delrec.data.formats.amazon import read_meta_titles
from delrec.data.formats.files import fail, read_lines
from delrec.data.sequences import Dataset, build_dataset


def find_sequence_files(folder: Path) -> list[Path]:
    """`sequential_data.txt` in `folder`, then in its sub-folders (sorted: p5/ before transrec/)."""
    if not folder.is_dir():
        return []
    dirs = [folder] + sorted(d for d in folder.iterdir() if d.is_dir())
    return [d / "sequential_data.txt" for d in dirs if (d / "sequential_data.txt").is_file()]


def load_json(path: Path):
    text = "\n".join(read_lines(path, "utf-8", what="a JSON object"))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise fail(path, e.lineno, f"invalid JSON ({e.msg})") from None


def read_items_tsv(path: Path) -> dict[str, str]:
    """ASIN -> title from a header-led TSV with `asin` and `title` columns."""
    lines = read_lines(path, "utf-8", what="a header with asin and title columns")
    header = lines[0].split("\t")
    if "asin" not in header or "title" not in header:
        raise fail(path, 1, f"header needs 'asin' and 'title' columns, got {header}")
    a, t = header.index("asin"), header.index("title")
    titles = {}
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(header):
            raise fail(path, n, f"expected {len(header)} tab-separated fields, got {len(parts)}")
        titles[parts[a]] = clean_title(parts[t])
    return titles


def title_source(seq_file: Path, root: Path):
    """(title map keyed by the ids the sequences will use, its file, id2item, id2user), or None."""
    here = seq_file.parent
    search = list(dict.fromkeys([here, root] + (sorted(d for d in root.iterdir() if d.is_dir())
                                                if root.is_dir() else [])))
    if (here / "id2title.json").is_file():  # a map beside the sequences is keyed by their ids
        return _id2title(here / "id2title.json"), here / "id2title.json", None, None
    if (here / "datamaps.json").is_file():
        maps = load_json(here / "datamaps.json")
        if not isinstance(maps, dict) or not isinstance(maps.get("id2item"), dict):
            raise fail(here / "datamaps.json", None, "expected an object with an 'id2item' map")
        for d in search:
            if (d / "items.tsv").is_file():
                return read_items_tsv(d / "items.tsv"), d / "items.tsv", maps["id2item"], maps.get("id2user")
            metas = sorted(d.glob("meta_*.json*"))
            if metas:
                wanted = {str(v) for v in maps["id2item"].values()}
                return read_meta_titles(metas[0], wanted), metas[0], maps["id2item"], maps.get("id2user")
        return None
    for d in search:
        if (d / "id2title.json").is_file():
            return _id2title(d / "id2title.json"), d / "id2title.json", None, None
    return None


def _id2title(path: Path) -> dict[str, str]:
    data = load_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise fail(path, None, "expected a JSON object {item id: title string}")
    return {str(k): clean_title(v) for k, v in data.items()}


def read_p5(folder: Path, *, name: str = "beauty", min_interactions: int = 5) -> Dataset:
    folder = Path(folder)
    files = find_sequence_files(folder)
    if not files:
        raise DelrecError(f"{folder}: no sequential_data.txt (here or in a sub-folder)")
    for seq_file in files:
        source = title_source(seq_file, folder)
        if source is not None:
            return _read_sequences(seq_file, *source, name=name, min_interactions=min_interactions)
    raise DelrecError(f"{files[0]}: no title map found (id2title.json, or datamaps.json beside the sequences "
                      "with items.tsv or meta_<Cat>.json[.gz])")


def _read_sequences(seq_file: Path, titles: dict[str, str], title_file: Path, id2item, id2user, *, name: str,
                    min_interactions: int) -> Dataset:
    records, seen = [], set()
    for n, line in enumerate(read_lines(seq_file, "utf-8", what="'user item item ...' lines"), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 3:
            raise fail(seq_file, n, f"user {tokens[0]!r} has {len(tokens) - 1} item(s); "
                                    "a sequence needs at least 2")
        user = str(id2user.get(tokens[0], tokens[0])) if id2user else tokens[0]
        if user in seen:
            raise fail(seq_file, n, f"user {tokens[0]!r} appears twice")
        seen.add(user)
        for t, token in enumerate(tokens[1:]):
            item = token
            if id2item is not None:
                if token not in id2item:
                    raise fail(seq_file, n, f"item {token!r} is not in datamaps.json id2item")
                item = str(id2item[token])
            if item not in titles:
                raise fail(seq_file, n, f"item {item!r} has no title in {title_file.name}")
            records.append((user, item, float(t)))
    return build_dataset(name, records, titles, min_interactions=min_interactions, domain="beauty",
                         source=str(seq_file))
