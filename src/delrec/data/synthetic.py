"""A generated "toy world": titled items in genres and series, users who watch series in order.

The next item is predictable from the last one most of the time (the next part of the same series), with
genre runs between series, so teachers and LMs can visibly learn it in seconds.
"""

from __future__ import annotations

import random

from delrec.data.catalog import Catalog
from delrec.data.sequences import Dataset

GENRES = {
    "space": ["Star", "Galaxy", "Nebula", "Orbit", "Comet", "Rocket"],
    "fantasy": ["Dragon", "Wizard", "Elf", "Castle", "Sword", "Crown"],
    "crime": ["Detective", "Heist", "Alibi", "Witness", "Cartel", "Verdict"],
    "comedy": ["Banana", "Pajama", "Picnic", "Giggle", "Noodle", "Wobble"],
    "horror": ["Crypt", "Shadow", "Haunt", "Ghoul", "Raven", "Fog"],
    "sports": ["Goal", "Sprint", "Racket", "Marathon", "Slam", "Rookie"],
}
NOUNS = ["Quest", "Saga", "Chronicles", "Files", "Club", "Nights", "Tales", "Legacy"]


def make_world(n_users: int = 300, n_items: int = 120, *, series_len: int = 4, min_len: int = 8,
               max_len: int = 20, seed: int = 0, domain: str = "movie") -> Dataset:
    rng = random.Random(seed)
    genres = list(GENRES)
    series: list[list[int]] = []
    by_genre: dict[str, list[int]] = {g: [] for g in genres}
    catalog = Catalog()
    n_series = max(len(genres), n_items // series_len)
    for s in range(n_series):
        genre = genres[s % len(genres)]
        word = GENRES[genre][(s // len(genres)) % len(GENRES[genre])]
        noun = NOUNS[(s // (len(genres) * len(GENRES[genre]))) % len(NOUNS)]
        parts = []
        for p in range(series_len):
            title = f"{word} {noun} {p + 1}" + ("" if s < len(genres) * 6 else f" ({1990 + s % 30})")
            parts.append(catalog.add(f"i{len(catalog)}", title))
        by_genre[genre].append(len(series))
        series.append(parts)
    users, sequences = [], []
    for u in range(n_users):
        fav = rng.sample(genres, 2)
        length = rng.randint(min_len, max_len)
        seq: list[int] = []
        while len(seq) < length:
            genre = fav[0] if rng.random() < 0.7 else fav[1]
            candidates = [s for s in by_genre[genre] if series[s][0] not in seq] or by_genre[genre]
            for item in series[rng.choice(candidates)]:
                if len(seq) >= length:
                    break
                seq.append(item)
        users.append(f"u{u}")
        sequences.append(seq)
    return Dataset(name="synthetic", catalog=catalog, users=users, sequences=sequences, domain=domain)
