"""GroupLens MovieLens readers: ML-100K (`u.data` + `u.item`) and ML-1M (`ratings.dat` + `movies.dat`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from delrec.data.catalog import clean_title
from delrec.data.formats.files import fail, locate, parse_time, read_lines
from delrec.data.sequences import Dataset, build_dataset


@dataclass(frozen=True)
class Layout:
    ratings: str        # user<sep>item<sep>rating<sep>timestamp, one line per rating
    items: str          # item<sep>title<sep>..., one line per movie
    ratings_sep: str
    items_sep: str


LAYOUTS = {"movielens-100k": Layout("u.data", "u.item", "\t", "|"),
           "movielens-1m": Layout("ratings.dat", "movies.dat", "::", "::")}


def read_titles(path: Path, sep: str, *, min_fields: int) -> dict[str, str]:
    """`id<sep>title<sep>...` lines; GroupLens writes them in latin-1, which never fails to decode."""
    titles: dict[str, str] = {}
    for n, line in enumerate(read_lines(path, "latin-1", what="one movie per line"), 1):
        if not line.strip():
            continue
        parts = line.split(sep)
        if len(parts) < min_fields:
            raise fail(path, n, f"expected at least {min_fields} {sep!r}-separated fields, got {len(parts)}")
        item = parts[0].strip()
        if not item:
            raise fail(path, n, "empty movie id")
        if item in titles:
            raise fail(path, n, f"movie id {item!r} appears twice")
        titles[item] = clean_title(parts[1])
    return titles


def read_ratings(path: Path, sep: str, titles: dict[str, str], title_file: Path
                 ) -> list[tuple[str, str, float]]:
    """`user<sep>item<sep>rating<sep>timestamp` lines; every item must have a title."""
    records = []
    what = "tab" if sep == "\t" else repr(sep)
    for n, line in enumerate(read_lines(path, "utf-8", what="user/item/rating/timestamp lines"), 1):
        if not line.strip():
            continue
        parts = line.split(sep)
        if len(parts) != 4:
            raise fail(path, n, f"expected 4 {what}-separated fields, got {len(parts)}")
        user, item = parts[0].strip(), parts[1].strip()
        if not user or not item:
            raise fail(path, n, "empty user or item id")
        if item not in titles:
            raise fail(path, n, f"item {item!r} is not in {title_file.name}")
        records.append((user, item, parse_time(path, n, parts[3].strip())))
    return records


def read_movielens(folder: Path, fmt: str = "movielens-100k", *, name: str = "ml-100k",
                   min_interactions: int = 5) -> Dataset:
    """`folder` (or its only sub-folder holding the ratings file) in the layout `fmt` names."""
    layout = LAYOUTS[fmt]
    folder = locate(Path(folder), layout.ratings)
    item_file, data_file = folder / layout.items, folder / layout.ratings
    titles = read_titles(item_file, layout.items_sep, min_fields=2)
    records = read_ratings(data_file, layout.ratings_sep, titles, item_file)
    return build_dataset(name, records, titles, min_interactions=min_interactions, source=str(data_file))
