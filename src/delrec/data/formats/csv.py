"""Generic CSV/TSV interactions with a header row.

Columns are found by name: `data.columns` may map user/item/timestamp/title to the file's own names, otherwise
common names are tried (user, user_id, userId; item, item_id, itemId, movieId, asin; timestamp, time; title,
name). Titles come from the title column, or from `items.csv`/`items.tsv` beside the file. Without a timestamp
column, file order is time order. The delimiter is `data.delimiter`, else `\\t` for .tsv and `,` otherwise.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

from delrec import DelrecError
from delrec.data.catalog import clean_title
from delrec.data.formats.files import fail, read_lines
from delrec.data.sequences import Dataset, build_dataset

ALIASES = {
    "user": ("user", "user_id", "userId", "userid"),
    "item": ("item", "item_id", "itemId", "itemid", "movieId", "asin"),
    "timestamp": ("timestamp", "time", "ts", "unixReviewTime"),
    "title": ("title", "name", "item_title"),
}
REQUIRED = ("user", "item")


def delimiter_for(path: Path, configured: str) -> str:
    if configured:
        return "\t" if configured in ("\\t", "tab") else configured
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def table(path: Path, delimiter: str, what: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) rows; quoted fields may span lines, as CSV allows."""
    text = "\n".join(read_lines(path, "utf-8", what=what))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        head = [h.strip() for h in next(reader)]
        body = []
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                if len(fields) != len(head):
                    raise fail(path, reader.line_num, f"expected {len(head)} {delimiter!r}-separated fields, "
                                                      f"got {len(fields)}")
                body.append((reader.line_num, fields))
    except csv.Error as e:
        raise fail(path, reader.line_num, f"malformed CSV ({e})") from None
    return head, body


def column(path: Path, head: list[str], role: str, columns: dict, required: bool) -> int | None:
    if role in columns:
        if columns[role] not in head:
            raise fail(path, 1, f"data.columns.{role} = {columns[role]!r} is not in the header {head}")
        return head.index(columns[role])
    found = next((a for a in ALIASES[role] if a in head), None)
    if found is None and required:
        raise fail(path, 1, f"no {role} column in the header {head}; set data.columns.{role}")
    return head.index(found) if found else None


def parse_when(path: Path, n: int, value: str) -> float:
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise fail(path, n, f"timestamp {value!r} is neither a number nor an ISO date") from None


def find_table(folder: Path) -> Path:
    if folder.is_file():
        return folder
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".csv", ".tsv") and p.stem != "items")
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DelrecError(f"{folder}: expected one .csv/.tsv interactions file (found {names}); "
                          "point data.data_dir at the file")
    return found[0]


def read_csv(folder: Path, *, name: str = "csv", columns: dict | None = None, delimiter: str = "",
             min_interactions: int = 5) -> Dataset:
    columns = dict(columns or {})
    unknown = set(columns) - set(ALIASES)
    if unknown:
        raise DelrecError(f"data.columns: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"use {', '.join(ALIASES)}")
    path = find_table(Path(folder))
    sep = delimiter_for(path, delimiter)
    head, body = table(path, sep, "a header row and one interaction per line")
    u, i = (column(path, head, r, columns, True) for r in REQUIRED)
    t = column(path, head, "timestamp", columns, False)
    ti = column(path, head, "title", columns, False)
    titles: dict[str, str] = {}
    title_file = path
    if ti is None:
        beside = (path.with_name("items.tsv"), path.with_name("items.csv"))
        title_file = next((p for p in beside if p.is_file()), None)
        if title_file is None:
            raise fail(path, 1, f"no title column in the header {head}; set data.columns.title or put "
                                "items.csv (item, title) beside it")
        ihead, ibody = table(title_file, delimiter_for(title_file, delimiter),
                             "a header row and one item per line")
        ii = column(title_file, ihead, "item", columns, True)
        it = column(title_file, ihead, "title", columns, True)
        titles = {f[ii].strip(): clean_title(f[it]) for _, f in ibody}
    records = []
    for n, fields in body:
        user, item = fields[u].strip(), fields[i].strip()
        if not user or not item:
            raise fail(path, n, "empty user or item id")
        if ti is not None:
            if fields[ti].strip() and not titles.get(item):
                titles[item] = clean_title(fields[ti])
        elif item not in titles:
            raise fail(path, n, f"item {item!r} is not in {title_file.name}")
        records.append((user, item, parse_when(path, n, fields[t]) if t is not None else float(n)))
    if not records:
        raise fail(path, 2, "no interactions after the header")
    return build_dataset(name, records, titles, min_interactions=min_interactions, source=str(path),
                         require_titles=False)
