"""Atomic file writes: a crash mid-write never leaves a half-written artefact in place."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def umask_mode(mode: int) -> int:
    """`mode` as the process umask lets a plain open() or mkdir() create it (0o666 -> 0o644 under 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, umask_mode(0o666))  # mkstemp's 0600 would make every run file private to its owner
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
