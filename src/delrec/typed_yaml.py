"""Typed dataclasses from YAML: a file plus dotted `section.key=value` overrides, every value checked against
its annotated type, every error one line naming the dotted key."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import fields
from pathlib import Path

import yaml

from delrec import DelrecError


def read_tree(path: str | None = None, overrides: list[str] | tuple = ()) -> dict:
    """The YAML file's mapping (empty without a file) with each `a.b=value` override set in it (values stay
    strings here; `build_dataclass` parses them against the field's type)."""
    tree: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise DelrecError(f"config file not found: {p}")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise DelrecError(f"{p}: invalid YAML ({e})".replace("\n", " ")) from None
    for item in overrides:
        if "=" not in item:
            raise DelrecError(f"--set {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        _set_path(tree, key.strip(), value)
    return tree


def _coerce(key: str, value, typ):
    """Check (and for CLI strings, parse) `value` against the annotated type `typ`."""
    origin = typing.get_origin(typ) or typ
    if isinstance(value, str) and origin is not str:
        try:  # YAML reads "5e-3" as a string; numbers from the CLI must still parse
            value = origin(value) if origin in (int, float) else yaml.safe_load(value)
        except ValueError:
            raise DelrecError(f"{key}: expected {origin.__name__}, got {value!r}") from None
    if origin is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin in (list, dict) and isinstance(value, origin):
        return value
    if origin is bool and not isinstance(value, bool):
        raise DelrecError(f"{key}: expected true/false, got {value!r}")
    if origin in (int, float, str) and (not isinstance(value, origin) or isinstance(value, bool)):
        raise DelrecError(f"{key}: expected {origin.__name__}, got {value!r}")
    if origin in (list, dict) and not isinstance(value, origin):
        raise DelrecError(f"{key}: expected a {origin.__name__}, got {value!r}")
    return value


def build_dataclass(cls, values: dict, prefix: str = ""):
    """`cls(**values)`, nested dataclasses built from nested mappings; an unknown key or a wrong type is an
    error naming the dotted key (`prefix` + key)."""
    if not isinstance(values, dict):
        raise DelrecError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in known:
            raise DelrecError(f"unknown config key {full!r}; known: {', '.join(sorted(known))}")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = build_dataclass(typ, value or {}, full + ".")
        else:
            kwargs[key] = _coerce(full, value, typ)
    return cls(**kwargs)


def _set_path(tree: dict, dotted: str, value: str) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise DelrecError(f"--set {dotted}: {p!r} is not a section")
    node[parts[-1]] = value
