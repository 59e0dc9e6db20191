"""Dataset readers: one function per on-disk format, all returning a `Dataset`.

`read_dataset` picks the reader from `cfg.format` ("auto" = the dataset's usual format). Readers report every
problem as a one-line `DelrecError` that names the file and the line, so a user can open the file and fix it.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

from delrec import DelrecError
from delrec.config import DataConfig
from delrec.data.sequences import Dataset

FORMATS = ("movielens-100k", "movielens-1m", "llara", "atomic", "amazon-raw", "p5", "csv")
AUTO = {"ml-100k": "movielens-100k", "ml-1m": "movielens-1m", "steam": "llara", "csv": "csv"}


def fail(path, line: int | None, message: str) -> DelrecError:
    """The one-line error every reader raises: `path:line: message`."""
    where = f"{path}:{line}" if line else f"{path}"
    return DelrecError(f"{where}: {message}".replace("\n", " "))


def read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except FileNotFoundError:
        raise fail(path, None, "file not found") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip raises BadGzipFile (an OSError) or EOFError
        raise fail(path, None, f"cannot read ({e})") from None
    return data


def read_lines(path: Path, encoding: str = "utf-8", *, what: str = "data") -> list[str]:
    """All lines of a text file (optionally .gz), without line ends; raises on bad encoding or no content.

    Decoding the whole file at once is fast; only on failure do we count newlines to name the bad line.
    """
    data = read_bytes(path)
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4096]:
        # latin-1 decodes anything, so UTF-16 would otherwise fail much later on a garbled line
        raise fail(path, None, f"looks like UTF-16 text (byte-order mark or NUL bytes), not {encoding}; "
                               f"save the file as {encoding}")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise fail(path, line, f"not valid {encoding} (byte 0x{data[e.start]:02x}); save the file as "
                               f"{encoding}") from None
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln.removesuffix("\r") for ln in lines]
    if not any(ln.strip() for ln in lines):
        raise fail(path, 1, f"empty file, expected {what}")
    return lines


def parse_time(path, line: int, value: str) -> float:
    try:
        t = float(value)
    except ValueError:
        t = math.nan
    if not math.isfinite(t):
        raise fail(path, line, f"timestamp {value!r} is not a number")
    return t


def find_one(folder: Path, names: list[str], *, what: str) -> Path:
    """The first of `names` present in `folder` (a name may end in .gz)."""
    for name in names:
        for cand in (folder / name, folder / (name + ".gz")):
            if cand.is_file():
                return cand
    raise DelrecError(f"{folder}: no {what} found (expected {' or '.join(names)})")


def locate(folder: Path, marker: str) -> Path:
    """`folder`, or its only sub-folder holding `marker` (archives unpack into `ml-100k/`, LLaRA into `llara/`)."""
    if (folder / marker).exists() or not folder.is_dir():
        return folder
    inside = [d for d in sorted(folder.iterdir()) if d.is_dir() and (d / marker).exists()]
    return inside[0] if len(inside) == 1 else folder


def read_dataset(cfg: DataConfig, data_dir: Path) -> Dataset:
    """Read `cfg.dataset` from `data_dir` with the reader `cfg.format` names."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DelrecError(f"{data_dir}: data folder not found; pass --data-dir DIR or set data.data_dir")
    fmt = cfg.format
    if fmt == "auto":
        fmt = AUTO.get(cfg.dataset) or detect_amazon(data_dir)
    if fmt not in FORMATS:
        raise DelrecError(f"data.format: {fmt!r} is not one of auto, {', '.join(FORMATS)}")
    kw = {"name": cfg.dataset, "min_interactions": cfg.min_interactions}
    if fmt == "movielens-100k":
        from delrec.data.formats.movielens import read_ml100k
        return read_ml100k(locate(data_dir, "u.data"), **kw)
    if fmt == "movielens-1m":
        from delrec.data.formats.movielens import read_ml1m
        return read_ml1m(locate(data_dir, "ratings.dat"), **kw)
    if fmt == "llara":
        from delrec.data.formats.llara_steam import read_llara
        return read_llara(locate(data_dir, "id2name.txt"), name=cfg.dataset, allow_pickle=cfg.allow_pickle)
    if fmt == "atomic":
        from delrec.data.formats.atomic import read_atomic
        return read_atomic(data_dir, **kw)
    if fmt == "amazon-raw":
        from delrec.data.formats.amazon import read_amazon_raw
        return read_amazon_raw(data_dir, **kw)
    if fmt == "p5":
        from delrec.data.formats.amazon import read_p5
        return read_p5(data_dir, **kw)
    from delrec.data.formats.csv import read_csv
    return read_csv(data_dir, columns=cfg.columns, delimiter=cfg.delimiter, **kw)


def detect_amazon(data_dir: Path) -> str:
    """Which layout `data_dir` holds: RecBole atomic, raw Amazon 2014 dumps, P5 sequence files, or CSV."""
    from delrec.data.formats.amazon import find_raw_dumps, find_sequence_files

    if data_dir.is_file():
        return "csv" if data_dir.suffix in (".csv", ".tsv") else "atomic"
    if any(data_dir.glob("*.inter")):
        return "atomic"
    if find_raw_dumps(data_dir, required=False):
        return "amazon-raw"
    if find_sequence_files(data_dir):
        return "p5"
    if any(p.suffix in (".csv", ".tsv") for p in data_dir.iterdir()):
        return "csv"
    raise DelrecError(f"{data_dir}: no known dataset files (looked for RecBole *.inter/*.item, "
                      "reviews_<Cat>_5.json[.gz] + meta_<Cat>.json[.gz], "
                      "or sequential_data.txt + a title map)")
