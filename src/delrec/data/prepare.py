"""`delrec prepare`: load a dataset (fetching ML-100K from GroupLens when missing) and report its stats."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from delrec import DelrecError
from delrec.config import DataConfig
from delrec.io import umask_mode

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
# GroupLens publishes no checksum for the zip, so the extracted files are checked against known md5s instead.
ML100K_MD5 = {"u.data": "6e47046882bad158b0efbb84cd5cb987", "u.item": "c9e7f390115d79079537301d5204f3f7"}
DOWNLOAD_TIMEOUT_S = 20


def default_dir(dataset: str) -> Path:
    """Where a downloaded dataset lives: $DELREC_DATA/<dataset>, else ~/.cache/delrec/<dataset>."""
    root = os.environ.get("DELREC_DATA")
    return Path(root).expanduser() / dataset if root else Path.home() / ".cache" / "delrec" / dataset


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def fetch_ml100k(dest: Path, *, url: str = ML100K_URL, timeout: float = DOWNLOAD_TIMEOUT_S,
                 missing: tuple[str, ...] = tuple(ML100K_MD5)) -> Path:
    """Download and unpack the GroupLens zip into `dest` (atomically: nothing is left behind on failure)."""
    hint = f"download {url} yourself and put its u.data and u.item in {dest}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            blob = response.read()
    except (OSError, ValueError) as e:  # URLError, timeouts and refused connections are OSErrors
        raise DelrecError(f"ml-100k: {' and '.join(missing)} not found in {dest} and the download failed "
                          f"({getattr(e, 'reason', e)}); {hint}") from None
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
        members = {Path(n).name: n for n in archive.namelist()
                   if n.startswith("ml-100k/") and not n.endswith("/")}
        files = {name: archive.read(member) for name, member in members.items()}
    except (zipfile.BadZipFile, KeyError) as e:
        raise DelrecError(f"ml-100k: the download from {url} is not the expected zip ({e}); {hint}") from None
    for name, md5 in ML100K_MD5.items():
        if name not in files or _md5(files[name]) != md5:
            raise DelrecError(f"ml-100k: {name} in the downloaded zip is missing or has an unexpected md5 "
                              f"(want {md5}); {hint}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ml-100k.", dir=dest.parent))
    os.chmod(tmp, umask_mode(0o777))  # mkdtemp makes it 0700; it becomes `dest` itself
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if dest.exists() and not any(dest.iterdir()):
            dest.rmdir()
        if dest.exists():  # a partly filled folder: add the files beside what is there
            for name in files:
                os.replace(tmp / name, dest / name)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def ensure_ml100k(cfg: DataConfig) -> DataConfig:
    """The config pointing at a folder that holds u.data and u.item, downloading them if needed."""
    from delrec.data.formats.files import locate

    dest = Path(cfg.data_dir).expanduser() if cfg.data_dir else default_dir("ml-100k")
    dest = locate(dest, "u.data")
    missing = tuple(name for name in ML100K_MD5 if not (dest / name).is_file())
    if missing:
        fetch_ml100k(dest, missing=missing)
    return dataclasses.replace(cfg, data_dir=str(dest))


def prepare(cfg: DataConfig) -> dict:
    """Load the dataset `cfg` names and return its statistics (what `delrec prepare` prints)."""
    from delrec.data.registry import load_dataset, resolve_data_dir

    if cfg.dataset == "ml-100k" and cfg.format in ("auto", "movielens-100k"):
        cfg = ensure_ml100k(cfg)
    ds = load_dataset(cfg)
    stats = ds.stats()
    stats["domain"] = ds.domain
    if cfg.dataset != "synthetic":
        stats["data_dir"] = str(resolve_data_dir(cfg))
    if ds.predefined:
        stats["predefined_split_users"] = {k: len(v) for k, v in ds.predefined.items()}
    return stats
