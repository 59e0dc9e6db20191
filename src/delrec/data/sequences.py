"""Per-user chronological sequences and the Dataset every later stage consumes."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from delrec import DelrecError
from delrec.data.catalog import Catalog


@dataclass
class Dataset:
    """A catalog plus one chronological item sequence (dense ids) per user."""

    name: str
    catalog: Catalog
    users: list[str]
    sequences: list[list[int]]
    domain: str = "movie"
    # User indices of a split shipped with the data ("train"/"valid"/"test"), e.g. LLaRA's; used by the
    # "predefined" protocol. None for datasets that are split by delrec's own protocols.
    predefined: dict[str, list[int]] | None = None

    @property
    def n_items(self) -> int:
        return len(self.catalog)

    @property
    def n_interactions(self) -> int:
        return sum(len(s) for s in self.sequences)

    def fingerprint(self) -> str:
        """Stable hash of users, item ids and order: candidate files are bound to it."""
        h = hashlib.sha256()
        for user, seq in zip(self.users, self.sequences):
            h.update(user.encode())
            h.update(b"\x00")
            h.update(",".join(self.catalog.raw_ids[i] for i in seq).encode())
            h.update(b"\n")
        return h.hexdigest()[:16]

    def stats(self) -> dict:
        lens = [len(s) for s in self.sequences]
        untitled = sum(1 for t in self.catalog.titles if not t)
        return {
            "dataset": self.name,
            "users": len(self.users),
            "items": self.n_items,
            "interactions": self.n_interactions,
            "mean_sequence_length": round(sum(lens) / max(len(lens), 1), 2),
            "items_without_titles": untitled,
        }


def build_dataset(
    name: str,
    records: Iterable[tuple[str, str, float]],
    titles: dict[str, str],
    *,
    min_interactions: int = 5,
    domain: str = "movie",
    source: str = "",
    require_titles: bool = True,
) -> Dataset:
    """Group (user, item, time) records into chronological sequences.

    Ties in time keep the order of the records (the sort is stable). Users with fewer than `min_interactions`
    interactions are dropped, then item ids are remapped densely in first-seen order.
    """
    per_user: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for n, (user, item, ts) in enumerate(records):
        per_user[str(user)].append((float(ts), n, str(item)))
    if not per_user:
        raise DelrecError(f"{source or name}: no interactions found (empty file?)")
    catalog = Catalog()
    users, sequences = [], []
    for user, rows in per_user.items():
        if len(rows) < min_interactions:
            continue
        rows.sort(key=lambda r: (r[0], r[1]))
        seq = []
        for _, _, item in rows:
            if item not in catalog:
                if require_titles and item not in titles:
                    raise DelrecError(f"{source or name}: item {item!r} (user {user!r}) has no title in the title map")
                catalog.add(item, titles.get(item, ""))
            seq.append(catalog.dense(item))
        users.append(user)
        sequences.append(seq)
    if not users:
        raise DelrecError(f"{source or name}: no user has at least {min_interactions} interactions")
    return Dataset(name=name, catalog=catalog, users=users, sequences=sequences, domain=domain)
