"""RecBole atomic files: `<name>.inter` (user_id, item_id, optional timestamp) + `<name>.item` (titles).

Both are tab-separated with a `name:type` header, e.g. `user_id:token	item_id:token	rating:float
timestamp:float` and `item_id:token	title:token_seq`. Without a timestamp field, file order is time order.
"""

from __future__ import annotations

from pathlib import Path

from delrec import DelrecError
from delrec.data.catalog import clean_title
from delrec.data.formats.files import fail, parse_time, read_lines
from delrec.data.sequences import Dataset, build_dataset

TITLE_FIELDS = ("title", "movie_title", "app_name", "product_name", "name")


def header(path: Path, lines: list[str]) -> list[str]:
    """Field names without their `:type` suffix."""
    names = [f.split(":", 1)[0].strip() for f in lines[0].split("\t")]
    if any(":" not in f for f in lines[0].split("\t")):
        raise fail(path, 1, "expected a RecBole header of name:type fields (e.g. user_id:token)")
    return names


def rows(path: Path, lines: list[str], width: int):
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != width:
            raise fail(path, n, f"expected {width} tab-separated fields, got {len(parts)}")
        yield n, parts


def find_inter(folder: Path, name: str) -> Path:
    if folder.is_file():
        return folder
    inters = sorted(folder.glob("*.inter"))
    if len(inters) > 1:
        named = [p for p in inters if p.stem.lower().replace("_", "-") in (name, f"amazon-{name}")]
        if len(named) == 1:
            return named[0]
        raise DelrecError(f"{folder}: several .inter files ({', '.join(p.name for p in inters)}); "
                          "point data.data_dir at one of them")
    if not inters:
        raise DelrecError(f"{folder}: no RecBole .inter file")
    return inters[0]


def read_item_titles(path: Path) -> dict[str, str]:
    lines = read_lines(path, "utf-8", what="a header line and one item per line")
    names = header(path, lines)
    title_field = next((f for f in TITLE_FIELDS if f in names), None)
    if "item_id" not in names or title_field is None:
        raise fail(path, 1, f"header needs item_id and a title field ({', '.join(TITLE_FIELDS)}); "
                            f"got {names}")
    i, t = names.index("item_id"), names.index(title_field)
    titles = {}
    for _, parts in rows(path, lines, len(names)):
        titles[parts[i]] = clean_title(parts[t])
    return titles


def read_atomic(folder: Path, *, name: str = "beauty", min_interactions: int = 5) -> Dataset:
    inter = find_inter(Path(folder), name)
    item_file = inter.with_suffix(".item")
    if not item_file.is_file():
        raise DelrecError(f"{item_file}: not found; delrec needs item titles from the .item file")
    titles = read_item_titles(item_file)
    lines = read_lines(inter, "utf-8", what="a header line and one interaction per line")
    names = header(inter, lines)
    if "user_id" not in names or "item_id" not in names:
        raise fail(inter, 1, f"header needs user_id and item_id fields; got {names}")
    u, i = names.index("user_id"), names.index("item_id")
    t = names.index("timestamp") if "timestamp" in names else None
    records = []
    for n, parts in rows(inter, lines, len(names)):
        if parts[i] not in titles:
            raise fail(inter, n, f"item {parts[i]!r} is not in {item_file.name}")
        ts = parse_time(inter, n, parts[t]) if t is not None else float(n)
        records.append((parts[u], parts[i], ts))
    if not records:
        raise fail(inter, 2, "no interactions after the header")
    return build_dataset(name, records, titles, min_interactions=min_interactions, source=str(inter))
