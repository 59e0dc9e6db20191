"""Dataset name -> reader, domain and default format; `load_dataset` is the one entry point."""

from __future__ import annotations

import os
from pathlib import Path

from delrec import DelrecError
from delrec.choices import DATASET_DOMAINS
from delrec.config import DataConfig
from delrec.data.sequences import Dataset
from delrec.data.synthetic import make_world


def resolve_data_dir(cfg: DataConfig) -> Path:
    if cfg.data_dir:
        return Path(cfg.data_dir).expanduser()
    root = os.environ.get("DELREC_DATA")
    cached = Path.home() / ".cache" / "delrec" / cfg.dataset  # where `delrec prepare` downloads ML-100K
    if not root and cached.is_dir():
        return cached
    if not root:
        raise DelrecError(f"data.data_dir is empty and DELREC_DATA is not set: say where the {cfg.dataset} "
                          "files are with --data-dir DIR")
    return Path(root).expanduser() / cfg.dataset


def check_data_dir(cfg: DataConfig) -> None:
    """The data folder exists (synthetic data has none); its files are checked when they are read."""
    if cfg.dataset == "synthetic":
        return
    folder = resolve_data_dir(cfg)
    if not folder.exists():
        raise DelrecError(f"{folder}: data folder not found; pass --data-dir DIR or set data.data_dir")


def load_dataset(cfg: DataConfig) -> Dataset:
    domain = cfg.domain or DATASET_DOMAINS.get(cfg.dataset, "movie")
    if cfg.dataset == "synthetic":
        return make_world(cfg.synthetic_users, cfg.synthetic_items, seed=cfg.seed, domain=domain)
    from delrec.data.formats import read_dataset  # readers import lazily: most runs need one

    ds = read_dataset(cfg, resolve_data_dir(cfg))
    ds.domain = domain
    return ds
