"""Data layer: catalog, sequences, readers, protocols, candidate files, synthetic world."""

from delrec.data.catalog import Catalog, clean_title, without_year
from delrec.data.sequences import Dataset, build_dataset

__all__ = ["Catalog", "Dataset", "build_dataset", "clean_title", "without_year"]
