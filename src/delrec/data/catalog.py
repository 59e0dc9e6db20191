"""Items: dense id <-> raw id <-> cleaned title."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

# Articles that MovieLens-style titles move to the end ("Usual Suspects, The (1995)").
_ARTICLES = ("The", "A", "An", "L'", "Le", "La", "Les", "Il", "Lo", "Die", "Der", "Das", "El", "Los", "Las", "Un",
             "Une", "Det", "Den", "O")
_TRAILING_ARTICLE = re.compile(
    r"^(?P<body>.+?), (?P<art>" + "|".join(re.escape(a) for a in _ARTICLES) + r")(?P<tail>(?: \([^)]*\))*)$"
)


def clean_title(raw: str) -> str:
    """Decode HTML entities, collapse whitespace, move a trailing article to the front.

    `Usual Suspects, The (1995)` -> `The Usual Suspects (1995)`; `Cité des enfants perdus, La (1995)` ->
    `La Cité des enfants perdus (1995)`; `Enfer, L' (1994)` -> `L'Enfer (1994)`.
    """
    text = " ".join(html.unescape(html.unescape(raw)).split())
    m = _TRAILING_ARTICLE.match(text)
    if m:
        art = m.group("art")
        sep = "" if art.endswith("'") else " "
        text = f"{art}{sep}{m.group('body')}{m.group('tail')}"
    return text


_RELEASE_YEAR = re.compile(r"\s+\((?:1[89]|20)\d\d\)$")


def without_year(title: str) -> str:
    """`Toy Story (1995)` -> `Toy Story`: only a trailing four-digit year in parentheses goes."""
    return _RELEASE_YEAR.sub("", title)


@dataclass
class Catalog:
    """The item universe. Dense ids are 0..len-1 in the order items were added."""

    raw_ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.raw_ids) != len(self.titles):
            raise ValueError("raw_ids and titles must have the same length")
        self._index = {r: i for i, r in enumerate(self.raw_ids)}
        if len(self._index) != len(self.raw_ids):
            raise ValueError("duplicate raw item id in catalog")

    def add(self, raw_id: str, title: str) -> int:
        raw_id = str(raw_id)
        if raw_id in self._index:
            return self._index[raw_id]
        self._index[raw_id] = len(self.raw_ids)
        self.raw_ids.append(raw_id)
        self.titles.append(title)
        return self._index[raw_id]

    def dense(self, raw_id: str) -> int:
        return self._index[str(raw_id)]

    def __contains__(self, raw_id: object) -> bool:
        return str(raw_id) in self._index

    def __len__(self) -> int:
        return len(self.raw_ids)

    def title(self, item: int) -> str:
        return self.titles[item]

    def subset(self, keep: list[int]) -> tuple[Catalog, dict[int, int]]:
        """A catalog of only `keep` (old dense ids), and the old -> new id map."""
        remap = {old: new for new, old in enumerate(keep)}
        return Catalog([self.raw_ids[i] for i in keep], [self.titles[i] for i in keep]), remap
