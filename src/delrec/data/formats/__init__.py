"""Dataset readers: one function per on-disk format, all returning a `Dataset`.

`read_dataset` picks the reader from `cfg.format` ("auto" = the dataset's usual format). Readers report every
problem as a one-line `DelrecError` that names the file and the line, so a user can open the file and fix it.
"""

from __future__ import annotations

from pathlib import Path

from delrec import DelrecError
from delrec.choices import FORMATS
from delrec.config import DataConfig
from delrec.data.formats.files import locate
from delrec.data.sequences import Dataset

AUTO = {"ml-100k": "movielens-100k", "ml-1m": "movielens-1m", "steam": "llara", "csv": "csv"}


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
    if fmt.startswith("movielens-"):
        from delrec.data.formats.movielens import read_movielens
        return read_movielens(data_dir, fmt, **kw)
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
        from delrec.data.formats.p5 import read_p5
        return read_p5(data_dir, **kw)
    from delrec.data.formats.csv import read_csv
    return read_csv(data_dir, columns=cfg.columns, delimiter=cfg.delimiter, **kw)


def detect_amazon(data_dir: Path) -> str:
    """Which layout `data_dir` holds: RecBole atomic, raw Amazon 2014 dumps, P5 sequence files, or CSV."""
    from delrec.data.formats.amazon import find_raw_dumps
    from delrec.data.formats.p5 import find_sequence_files

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
