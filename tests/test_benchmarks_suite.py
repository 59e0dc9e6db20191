"""benchmarks/ as a suite: every results JSON says what produced it, BENCHMARKS.md's headline numbers are the
ones in the files it names (read here, not restated), every file the index or a question page names exists,
and the scripts stand alone (`--help` works, no sys.path edits, no imports from one another)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
INDEX = BENCH / "BENCHMARKS.md"
SCRIPTS = sorted(p for d in ("quality", "speed", "tools", "diagnostics") for p in (BENCH / d).glob("*.py"))
DECIMAL = re.compile(r"[+-]?\d+\.\d+(?:e[+-]?\d+)?")
CHECK = re.compile(r"([+-]?[\d.,]+(?:e[+-]?\d+)?) = ([^:;]+\.json): ([^;]+)")


def lookup(doc, path: str):
    for key in path.split("."):
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    return doc


def shown_equals(shown: str, value) -> bool:
    """`shown` is `value` as printed: the same digits after rounding (significant digits in e-notation)."""
    text = shown.replace(",", "").lstrip("+")
    if "e" in text:
        digits = len(text.split("e")[0].replace("-", "").replace(".", "")) - 1
        return f"{value:.{digits}e}" == f"{float(text):.{digits}e}"
    places = len(text.split(".")[1]) if "." in text else 0
    return round(float(value), places) == round(float(text), places)


def index_rows() -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in INDEX.read_text().splitlines()
            if line.startswith("|") and "<!--" in line]


def test_the_index_is_short_and_has_rows():
    assert len(INDEX.read_text().splitlines()) <= 150
    assert len(index_rows()) >= 15


@pytest.mark.parametrize("row", index_rows(), ids=lambda r: r[0][:40])
def test_every_headline_number_is_read_from_its_file(row):
    question, _, _, result, headline, machine = row
    visible, comment = headline.split("<!--")
    comment = comment.split("-->")[0]
    checks = CHECK.findall(comment)
    assert checks, f"{question}: the headline names no key"
    amx = set()
    for shown, file, path in checks:
        doc = json.loads((RESULTS / file.strip()).read_text())
        value = lookup(doc, path.strip())
        assert shown_equals(shown, value), f"{question}: shows {shown}, {file}:{path} holds {value}"
        assert shown in visible, f"{question}: {shown} is checked but not shown"
        amx.add(doc["provenance"]["machine"].get("amx_bf16"))
    backed = {s for s, _, _ in checks}
    unbacked = [n for n in DECIMAL.findall(visible) if n not in backed and n.lstrip("+") not in backed]
    assert not unbacked, f"{question}: headline numbers with no file key: {unbacked}"
    assert (RESULTS / result.strip("`").removeprefix("results/")).is_file(), result
    assert amx == {machine == "Xeon"}, f"{question}: the row says {machine}, the files' provenance says amx {amx}"


def test_every_file_the_index_and_the_pages_name_exists():
    missing = []
    for page in [INDEX, *RESULTS.glob("*/README.md")]:
        for ref in re.findall(r"`((?:results|benchmarks)/[^`\s]+?\.(?:json|md|png|py|sh))`", page.read_text()):
            if any(c in ref for c in "*<{"):
                continue  # a pattern, not a file
            path = BENCH / ref if ref.startswith("results/") else ROOT / ref
            if not path.exists():
                missing.append(f"{page.relative_to(ROOT)}: {ref}")
    assert not missing, missing


def test_every_results_json_carries_commit_and_machine():
    files = sorted(RESULTS.rglob("*.json"))
    assert len(files) > 20
    for path in files:
        stamp = json.loads(path.read_text()).get("provenance") or {}
        assert stamp.get("commit") and stamp.get("machine", {}).get("cpu"), f"{path.relative_to(ROOT)}: no provenance"


def test_scripts_neither_edit_sys_path_nor_import_one_another():
    names = {p.stem for p in SCRIPTS}
    bad = []
    for path in [*SCRIPTS, *(ROOT / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                bad.append(f"{path.name}: sys.path")
            elif isinstance(node, ast.ImportFrom):
                if (node.module or "").split(".")[0] in names or (node.module or "").startswith("benchmarks"):
                    bad.append(f"{path.name}: from {node.module}")
                bad += [f"{path.name}: imports private {a.name}" for a in node.names if a.name.startswith("_")
                        and not a.name.startswith("__")]
            elif isinstance(node, ast.Import):
                bad += [f"{path.name}: import {a.name}" for a in node.names if a.name.split(".")[0] in names]
    assert not bad, bad


def test_every_script_answers_help():
    procs = {p: subprocess.Popen([sys.executable, str(p), "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, cwd=ROOT) for p in SCRIPTS}
    failed = {}
    for path, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        if proc.returncode or "usage:" not in out:
            failed[path.relative_to(ROOT).as_posix()] = err.strip().splitlines()[-1:] or out[:200]
    assert not failed, failed
