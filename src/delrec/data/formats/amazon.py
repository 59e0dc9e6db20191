"""Amazon review data: the raw 2014 dumps (the P5/TransRec sequence files are `p5.py`).

Raw dumps: `reviews_<Cat>_5.json[.gz]` (reviewerID, asin, unixReviewTime) + `meta_<Cat>.json[.gz]` (asin,
title). The 2014 meta files hold Python dict literals, not JSON: they are parsed with `ast.literal_eval`,
never `eval`, and only for the items the reviews use (meta files are much larger than the 5-core subsets).
`read_meta_titles` also serves P5 folders that name their items by ASIN.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from delrec import DelrecError
from delrec.data.catalog import clean_title
from delrec.data.formats.files import fail, parse_time, read_lines
from delrec.data.sequences import Dataset, build_dataset

_ASIN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]*)['"]""")
_REVIEWS = re.compile(r"^reviews_(?P<cat>.+?)(?:_5)?\.json(?:\.gz)?$")


def parse_object(path: Path, n: int, line: str) -> dict:
    """One JSON object, or one Python dict literal (the 2014 meta dumps)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        try:
            obj = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise fail(path, n, "not a JSON object or Python dict literal (truncated line?)") from None
    if not isinstance(obj, dict):
        raise fail(path, n, f"expected an object, got {type(obj).__name__}")
    return obj


def find_raw_dumps(folder: Path, *, required: bool = True) -> tuple[Path, Path] | None:
    found = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        m = _REVIEWS.match(p.name)
        if m:
            cat = m.group("cat")
            metas = [folder / f"meta_{cat}.json", folder / f"meta_{cat}.json.gz"]
            found.append((p, next((q for q in metas if q.is_file()), metas[0])))
    if len(found) > 1:
        raise DelrecError(f"{folder}: several review dumps ({', '.join(r.name for r, _ in found)}); keep one")
    if not found:
        if required:
            raise DelrecError(f"{folder}: no reviews_<Cat>_5.json[.gz] found")
        return None
    return found[0]


def read_meta_titles(path: Path, wanted: set[str]) -> dict[str, str]:
    """Titles of the `wanted` ASINs; items in the meta file without a title get ""."""
    titles: dict[str, str] = {}
    for n, line in enumerate(read_lines(path, "utf-8", what="one item object per line"), 1):
        if not line.strip():
            continue
        m = _ASIN.search(line)
        if not m:
            raise fail(path, n, "no 'asin' field (truncated line?)")
        if m.group(1) in wanted:
            obj = parse_object(path, n, line)
            title = obj.get("title") or ""
            titles[str(obj.get("asin", m.group(1)))] = clean_title(str(title))
    return titles


def read_amazon_raw(folder: Path, *, name: str = "beauty", min_interactions: int = 5) -> Dataset:
    reviews, meta = find_raw_dumps(Path(folder))
    records, first_line = [], {}
    for n, line in enumerate(read_lines(reviews, "utf-8", what="one review object per line"), 1):
        if not line.strip():
            continue
        obj = parse_object(reviews, n, line)
        try:
            user, item, ts = str(obj["reviewerID"]), str(obj["asin"]), obj["unixReviewTime"]
        except KeyError as e:
            raise fail(reviews, n, f"missing field {e.args[0]!r}") from None
        numeric = isinstance(ts, (int, float)) and not isinstance(ts, bool)
        ts = float(ts) if numeric else parse_time(reviews, n, str(ts))
        first_line.setdefault(item, n)
        records.append((user, item, ts))
    titles = read_meta_titles(meta, set(first_line))
    for item, n in first_line.items():
        if item not in titles:
            raise fail(reviews, n, f"item {item!r} is not in {meta.name}")
    return build_dataset(name, records, titles, min_interactions=min_interactions, source=str(reviews),
                         require_titles=False)
