"""What every dataset reader shares: the one-line error naming file and line, reading (optionally gzipped)
text lines, numeric timestamps, and finding the folder that holds a dataset's files."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

from delrec import DelrecError


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


def locate(folder: Path, marker: str) -> Path:
    """`folder`, or its only sub-folder holding `marker` (archives unpack into `ml-100k/`, LLaRA into
    `llara/`)."""
    if (folder / marker).exists() or not folder.is_dir():
        return folder
    inside = [d for d in sorted(folder.iterdir()) if d.is_dir() and (d / marker).exists()]
    return inside[0] if len(inside) == 1 else folder
