"""What every script under benchmarks/ shares: its common arguments, its thread setting, and one result writer
that stamps each result with what produced it (commit, config digest, machine, command, date), so that every
stored number can be traced to the code and the machine that measured it."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from delrec.io import atomic_write_text
from delrec.runs import digest, git_commit, machine

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
STAMP = "provenance"  # the key every results JSON carries (tests/test_benchmarks_suite.py checks it)


def parser(doc: str | None, *, threads: int | None = None, out: str | Path | None = None,
           out_help: str = "where the result goes", run_config: bool = False) -> argparse.ArgumentParser:
    """The script's argument parser: its docstring's first line as description, the rest as epilog, plus
    `--threads` (torch intra-op threads; 0 = torch's default) and `--out` when the script takes them, and
    with `run_config` the required `--config` (a preset) and `--data-dir` (the dataset's folder)."""
    head, _, rest = (doc or "").strip().partition("\n")
    ap = argparse.ArgumentParser(description=head, epilog=rest.strip("\n") or None,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    if threads is not None:
        ap.add_argument("--threads", type=int, default=threads,
                        help=f"torch intra-op threads, 0 = torch's default (default {threads}; this machine "
                             "has 2 cores, often shared)")
    if out is not None:
        ap.add_argument("--out", type=Path, default=Path(out) if out else None, required=out == "",
                        help=out_help)
    if run_config:
        ap.add_argument("--config", required=True, help="YAML preset, e.g. configs/ml-100k.yaml")
        ap.add_argument("--data-dir", required=True, help="the dataset's folder, e.g. $DELREC_DATA/ml-100k")
    return ap


def set_threads(n: int) -> None:
    """torch's intra-op threads; 0 leaves torch's default."""
    if n > 0:
        import torch

        torch.set_num_threads(n)


def command(argv: list[str] | None = None) -> str:
    """The command line that ran, its script path relative to the repository when it lies inside it."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv else Path("?")
    try:
        head = str(script.relative_to(ROOT))
    except ValueError:
        head = argv[0] if argv else "?"
    return "python " + shlex.join([head, *argv[1:]])


def stamp(config=None, *, cmd: str | None = None) -> dict:
    """Commit, machine, command, date and (when one was used) the config's digest of a result."""
    out = {"commit": git_commit(), "machine": machine(), "command": cmd or command(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if config is not None:
        # Where a run wrote and read its files does not change what it measured: left out of the digest.
        settings = config.to_dict() if hasattr(config, "to_dict") else config
        if isinstance(settings, dict):
            settings = {k: v for k, v in settings.items() if k != "out"}
            if isinstance(settings.get("data"), dict):
                settings["data"] = {k: v for k, v in settings["data"].items() if k != "data_dir"}
        out["config_digest"] = digest(settings)
    return out


def write_result(path: str | Path, doc: dict, *, config=None, cmd: str | None = None,
                 markdown: str | None = None) -> dict:
    """`doc` with its provenance stamp, written atomically as JSON to `path` (and `markdown` beside it as .md);
    returns the stamped document."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamped = {**doc, STAMP: stamp(config, cmd=cmd)}
    atomic_write_text(path, json.dumps(stamped, indent=1, default=str) + "\n")
    if markdown is not None:
        atomic_write_text(path.with_suffix(".md"), markdown if markdown.endswith("\n") else markdown + "\n")
    return stamped


def row_interval(row: dict, metric: str) -> list[float]:
    """A metrics.json row's value and 95% interval as the results files store it: [mean, low, high], 4 places."""
    lo, hi = row["ci95"][metric]
    return [round(row[metric], 4), round(lo, 4), round(hi, 4)]


def paired_triplets(ranks_a, ranks_b, n_boot: int = 10000) -> dict:
    """b - a on the same examples as the results files store it: {"hr@1" / "ndcg@5": [mean, low, high]},
    rounded to 4 places (`metrics.paired_difference`, a paired bootstrap)."""
    from delrec.metrics import paired_difference

    d = paired_difference(ranks_a, ranks_b, n_boot=n_boot)
    return {m: [round(d[m]["b_minus_a"], 4), *(round(x, 4) for x in d[m]["ci95"])] for m in ("hr@1", "ndcg@5")}


def validation_choices(rows: dict) -> tuple[dict, dict]:
    """(teacher -> validation NDCG@5 alone, LM-based row -> validation NDCG@5) from the stored fusion choices."""
    from delrec.methods import METHODS

    teachers, lm_rows = {}, {}
    for name, row in rows.items():
        choice = row.get("fusion")
        if not choice or choice.get("lm") is None:
            continue
        for key, value in choice["valid_grid"].items():
            model, w = key.split("/w=")
            if float(w) == 0 and METHODS[name].fuses == "teacher":  # one teacher alone (+ensemble rows: a pair)
                teachers[model] = value
        if choice["w"] > 0:  # at w = 0 the chosen row is its teacher(s) alone: not LM-based
            lm_rows[name] = choice["valid_ndcg@5"]
        lm_rows[choice["lm"]] = choice["valid_ndcg@5_unfused"]
    if not teachers:
        raise SystemExit("no fusion rows in the metrics file; run with --set eval.fusion=true")
    return teachers, lm_rows


def peak_rss_kb(field: str = "VmHWM") -> int:
    """A field of /proc/self/status in kB (VmHWM: this process's peak resident memory); 0 where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:  # not Linux
        pass
    return 0


def stage_times(log_path: str | Path) -> dict:
    """What each part of a `delrec run` cost, from the `time` of its log.jsonl records. The time between two
    consecutive records goes to the later record's part: a training stage's steps and validations to its
    stage name (`stage2/lsr-only`), a method's test pass to "<method> test", a teacher to `teacher/<model>`.
    A resumed run's parts add up over its attempts; the gap before each `run_start` is left out."""
    import itertools

    from delrec import DelrecError

    log_path = Path(log_path)
    rows = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "time" in r]
    if not rows:
        raise DelrecError(f"{log_path}: no record carries a `time` (written before delrec logged it)")

    def part_of(rec: dict) -> str:
        return f"{rec.get('stage')} test" if rec.get("event") == "test" else str(rec.get("stage", "?"))

    parts: dict[str, float] = {}
    for prev, rec in itertools.pairwise(rows):
        if rec.get("event") == "run_start":
            continue
        parts[part_of(rec)] = parts.get(part_of(rec), 0.0) + rec["time"] - prev["time"]
    return {"parts_s": {k: round(v, 1) for k, v in parts.items()}, "total_s": round(sum(parts.values()), 1)}


def movie_titles() -> list[str]:
    """Titles for speed workloads: ML-100K's (from $DELREC_SHARED_DATA or ../shared/datasets) when present,
    else a synthetic catalogue's, so that a speed benchmark runs anywhere."""
    import os

    shared = Path(os.environ.get("DELREC_SHARED_DATA", ROOT.parent / "shared" / "datasets"))
    item = shared / "ml-100k" / "raw" / "u.item"
    if item.is_file():
        from delrec.data.catalog import clean_title

        return [clean_title(line.split("|")[1]) for line in item.read_text(encoding="latin-1").splitlines()
                if line.count("|") > 2 and line.split("|")[1] != "unknown"]
    from delrec.data.synthetic import make_world

    return list(make_world(n_items=400).catalog.titles)


def lsr_rows(titles: list[str], batch: int, n_candidates: int, seed: int = 0) -> list[tuple[str, str, list[str]]]:
    """`batch` ML-100K-like LSR prompts (10 history titles, `n_candidates` candidates): (prompt without the
    candidate list, prompt with it listed under letters, candidates)."""
    import random

    from delrec.prompts import templates as T

    rng = random.Random(seed)
    rows = []
    for _ in range(batch):
        picked = rng.sample(titles, 10 + n_candidates)
        hist, cands = picked[:10], picked[10:]
        rows.append((T.render_lsr("movie", "SASRec", hist, cands, False),
                     T.render_lsr("movie", "SASRec", hist, cands, True), cands))
    return rows


def stage_step(mode: str, precision: str, batch: int, attn: str = "", candidate_pass: str = "auto"):
    """(step(i), info): one scoring batch (`infer`) or stage-1/stage-2 training step of `mode` on the offline
    SmolLM2 and its token count; speed/throughput.py times it, diagnostics/profile_step.py profiles it."""
    import torch
    import torch.nn.functional as F

    from delrec.config import LMConfig, Stage2Config
    from delrec.lm.adapters import add_adalora, orthogonal_regulariser
    from delrec.lm.backbone import load_backbone
    from delrec.lm.scoring import CandidateScorer
    from delrec.lm.soft_prompt import SoftPrompt

    # bf16 = fp32 weights under bf16 autocast; bf16-weights = the frozen LM stored in bf16 (no per-call casts)
    backbone = load_backbone(LMConfig(backbone="smollm2-offline",
                                      dtype="bf16" if precision == "bf16-weights" else "fp32"))
    scorer = CandidateScorer(backbone, "title-likelihood", autocast_bf16=precision == "bf16",
                             candidate_pass=candidate_pass)
    if attn:
        backbone.model.set_attn_implementation(attn)
    soft = SoftPrompt.create(20, backbone, seed=0)
    rows = lsr_rows(movie_titles(), batch, 20)
    prompts, cands = [r[0] for r in rows], [r[2] for r in rows]
    labels = torch.zeros(batch, dtype=torch.long)
    n_params = sum(p.numel() for n, p in backbone.model.named_parameters() if "embed" not in n)
    tokens = sum(len(scorer.prepare(p, True)[0]) + 20 for p in prompts)  # prompt + soft
    tokens += sum(len(scorer.title_ids(t)) for c in cands for t in c)
    opt = None
    if mode == "stage2":
        cfg = Stage2Config(steps=100, init_r=16, target_r=8, warmup=0)
        model = add_adalora(backbone, cfg)
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(i: int) -> None:
        if mode == "infer":
            with torch.no_grad():
                scorer.score(prompts, cands, soft)
        elif mode == "stage1":
            loss = F.cross_entropy(scorer.score(prompts, cands, soft), labels)
            torch.autograd.grad(loss, soft.weight)
        else:
            loss = F.cross_entropy(scorer.score(prompts, cands, soft), labels)
            (loss + 0.5 * orthogonal_regulariser(backbone.model)).backward()
            opt.step()
            backbone.model.base_model.update_and_allocate(i)
            opt.zero_grad()
    return step, {"tokens": tokens, "n_params": n_params}
