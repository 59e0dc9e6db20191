"""File helpers below every other layer: atomic writes (a crash mid-write never leaves a half-written artefact
in place) and reading the format-tagged safetensors files delrec writes (soft prompts, loop checkpoints)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from delrec import DelrecError


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


def read_tagged_safetensors(path: str | os.PathLike, fmt: str, what: str, *, missing_hint: str = "",
                            corrupt_hint: str = "") -> tuple[dict, dict[str, str]]:
    """Tensors and string metadata of a safetensors file whose metadata `format` must be `fmt`. Nothing is
    unpickled. `what` names the artefact in the one-line error for a missing, unreadable or foreign file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DelrecError(f"{what}: {path} does not exist{missing_hint}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = f.keys()  # safe_open handles are not iterable
            tensors = {k: f.get_tensor(k) for k in names}
    except Exception as exc:  # noqa: BLE001 - any parse failure means the same thing to the user
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DelrecError(f"{what}: {path} is corrupt or truncated ({reason}){corrupt_hint}") from None
    if meta.get("format") != fmt:
        raise DelrecError(f"{what}: {path} is not a delrec {what} (metadata format {meta.get('format')!r})")
    return tensors, meta
