"""`delrec run` end to end on the demo preset (synthetic world, tiny random LM), plus the commands around it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from delrec.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """README's main command, `delrec run`, as a user runs it (a new process, so warnings print as they do
    for a user): the built-in demo preset into runs/demo of the working directory, a relative folder, so
    paths stored inside the run must not depend on the cwd. Its output is kept in stdout.txt / stderr.txt."""
    started_in = tmp_path_factory.mktemp("started-in")
    # One thread, as the rest of the suite (conftest.py): two stall when the other core is busy.
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-m", "delrec.cli", "run"], check=False, cwd=started_in, env=env,
                          capture_output=True, text=True, timeout=900)
    (started_in / "stdout.txt").write_text(done.stdout)
    (started_in / "stderr.txt").write_text(done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    return started_in / "runs" / "demo"


def test_the_demo_shows_headers_progress_and_the_table_without_library_noise(demo_run):
    out = (demo_run.parents[1] / "stdout.txt").read_text()
    err = (demo_run.parents[1] / "stderr.txt").read_text()
    assert out.lstrip().startswith("| method |") and "| delrec |" in out  # stdout: the table and its notes
    # a random LM: the table must not read as "the method does not work" (delrec may be below lsr-only)
    assert "randomly initialised LM" in out.split("| delrec |")[1] and "does not test the paper's claim" in out
    headers = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("== ")]
    for start in ("== no --config: the built-in demo preset", "== teacher sasrec", "== lm-zero-shot",
                  "== stage 2 (lsr-only)", "== stage 1 (delrec)", "== stage 2 (delrec)", "== results"):
        assert any(h.startswith(start) for h in headers), (start, headers)
    assert "stage1/delrec: 100%" in err and "<00:00" in err  # progress bars with their ETA
    # transformers' is_gradient_checkpointing FutureWarning came with every stage 2, with its source line
    for noise in ("FutureWarning", "is_gradient_checkpointing", "warnings.warn(", "Loading weights"):
        assert noise not in err, noise


def test_the_built_in_preset_is_configs_demo_yaml():
    from importlib.resources import files

    from delrec.config import load_config

    packaged = files("delrec") / "presets" / "demo.yaml"
    assert packaged.read_text() == (ROOT / "configs" / "demo.yaml").read_text()
    cfg = load_config(str(packaged))
    assert (cfg.out, cfg.lm.backbone, cfg.data.dataset) == ("runs/demo", "tiny-random-t5", "synthetic")


def test_demo_run_writes_every_artefact(demo_run):
    for name in ("config.yaml", "metrics.json", "results.md", "log.jsonl", "plots/metrics.png", "plots/training.png"):
        assert (demo_run / name).exists(), name
    metrics = json.loads((demo_run / "metrics.json").read_text())
    assert set(metrics["rows"]) >= {"popularity", "sasrec", "lm-zero-shot", "lsr-only", "delrec"}
    for row in metrics["rows"].values():
        assert 0.0 <= row["hr@1"] <= row["hr@5"] <= 1.0 and row["n"] > 0
        assert row["ci95"]["hr@1"][0] <= row["hr@1"] <= row["hr@1"] + 1e-9 + row["ci95"]["hr@1"][1]
    assert sorted(p.name.split("-")[0] for p in (demo_run / "candidates").glob("*.jsonl")) == ["test", "train", "valid"]


def test_demo_delrec_beats_zero_shot(demo_run):
    rows = json.loads((demo_run / "metrics.json").read_text())["rows"]
    # measured here: zero-shot 0.03 / 0.13, delrec about 0.11 / 0.26 (HR@1 / NDCG@5, 100 test users)
    assert rows["delrec"]["hr@1"] >= rows["lm-zero-shot"]["hr@1"] + 0.05, rows
    assert rows["delrec"]["ndcg@5"] >= rows["lm-zero-shot"]["ndcg@5"] + 0.08, rows


def test_changing_stage2_reuses_teacher_and_stage1(demo_run, tmp_path):
    stage1 = sorted((demo_run / "stage1").iterdir())
    stamps = {p: (p / "done.json").stat().st_mtime_ns for p in stage1}
    teacher_stamp = (demo_run / "teacher/sasrec/done.json").stat().st_mtime_ns
    argv = ["run", "--config", str(ROOT / "configs/demo.yaml"), "--out", str(demo_run),
            "--set", "stage2.steps=30", "--set", "stage2.eval_every=10", "--set", "eval.methods=[delrec]"]
    assert main(argv) == 0
    assert {p: (p / "done.json").stat().st_mtime_ns for p in stage1} == stamps
    assert (demo_run / "teacher/sasrec/done.json").stat().st_mtime_ns == teacher_stamp
    assert len(list((demo_run / "stage2").glob("delrec-*"))) == 2


def test_the_log_results_and_plot_say_what_they_show(demo_run):
    from delrec.report import _curves, training_figure

    log = [json.loads(line) for line in (demo_run / "log.jsonl").read_text().splitlines()]
    end = next(i for i, r in enumerate(log) if r.get("event") == "run_end")
    start, log = log[0], log[:end + 1]  # the demo run itself (other tests run more into the folder)
    assert start["event"] == "run_start" and start["delrec_version"] and start["config"] == "config.yaml"
    assert log[-1]["methods"] == ["popularity", "sasrec", "lm-zero-shot", "lsr-only", "delrec"]
    epochs = [r for r in log if r.get("stage") == "teacher/sasrec" and r.get("event") == "epoch"]
    assert epochs and all(r["metric"] == "full ndcg@10" and "loss" in r for r in epochs)
    tested = {r["stage"]: r for r in log if r.get("event") == "test"}
    assert list(tested) == log[-1]["methods"]
    assert all("ci95" in r and r["n"] == 100 for r in tested.values())
    metric_names = {r["stage"].split("/")[0]: r["metric"] for r in log if r.get("event") == "eval"}
    assert metric_names == {"stage1": "accuracy (TA/RPS mean)", "stage2": "ndcg@5"}
    results = (demo_run / "results.md").read_text()  # of the latest run into the folder
    assert f"commit {start['git_commit'] or 'unknown'}" in results and "Produced by delrec" in results
    assert "95% bootstrap interval" in results and "randomly initialised LM" in results
    fig = training_figure(_curves(demo_run / "log.jsonl"))
    assert all(ax.get_ylabel() for ax in fig.axes)  # every panel, left (loss) and right (validation) axis
    assert {ax.get_xlabel() for ax in fig.axes} >= {"epoch", "step"}


def test_evaluate_and_recommend_on_a_trained_run(demo_run, capsys, tmp_path):
    test_file = next((demo_run / "candidates").glob("test-*.jsonl"))
    out = demo_run / "eval.json"
    assert main(["evaluate", "--run", str(demo_run), "--candidates", str(test_file), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    first = json.loads((demo_run / "metrics.json").read_text())["rows"]
    assert list(rows) == list(first)  # every method of the run, not only the trained LMs
    for method, row in rows.items():
        for k in ("hr@1", "ndcg@5"):
            assert row[k] == pytest.approx(first[method][k]) and row["ci95"][k] == pytest.approx(first[method]["ci95"][k])
    assert (demo_run / "eval.results.md").exists()
    # a file from elsewhere: users the run never saw, their histories given in the file (raw ids)
    strangers = tmp_path / "strangers.jsonl"
    lines = test_file.read_text().splitlines()[:6]
    strangers.write_text("".join(json.dumps(json.loads(x) | {"user": f"new-{i}"}) + "\n" for i, x in enumerate(lines)))
    assert main(["evaluate", "--run", str(demo_run), "--candidates", str(strangers)]) == 0
    scored = json.loads((demo_run / "evaluations" / "strangers.metrics.json").read_text())
    assert list(scored["rows"]) == list(first) and all(r["n"] == 6 and "ci95" in r for r in scored["rows"].values())
    assert (demo_run / "evaluations" / "strangers.results.md").exists()
    from delrec.recommend import Recommender

    rec = Recommender.load(demo_run)
    ranked = rec.recommend(["i0", "i1", "i2"], ["i3", "i50", "i77"], top=3)
    assert len(ranked) == 3 and ranked[0][2] >= ranked[1][2] >= ranked[2][2]
    capsys.readouterr()
    assert main(["recommend", "--run", str(demo_run), "--history", "i0,i1,i2", "--candidates", "i3,i50"]) == 0
    printed = capsys.readouterr().out
    title = rec.dataset.catalog.titles
    assert title[rec.dataset.catalog.dense("i3")] in printed
    head = printed.splitlines()
    assert head[0].startswith("method: delrec") and title[0] in head[1] and "2 given" in head[2]
    assert head[3].startswith("score: mean log-probability per token of the title") and "rank" in head[5]


def test_a_missing_candidate_file_is_one_line(demo_run, tmp_path, capsys):
    assert main(["evaluate", "--run", str(demo_run), "--candidates", str(tmp_path / "nope.jsonl")]) == 2
    assert capsys.readouterr().err == f"delrec: error: {tmp_path / 'nope.jsonl'}: candidate file not found\n"


def test_evaluate_scores_the_hint_row_as_the_run_did(demo_run, tmp_path):
    """delrec+hint needs the teacher at scoring time: its hint is the teacher's top eval.hint_k of each
    example's own candidates. A copy of the demo run, with a short stage 2, gets the row."""
    run = tmp_path / "hinted"
    shutil.copytree(demo_run, run)
    argv = ["run", "--config", str(ROOT / "configs/demo.yaml"), "--out", str(run), "--set", "stage2.steps=6",
            "--set", "stage2.warmup=1", "--set", "stage2.eval_every=6", "--set", "eval.methods=[popularity, teachers, delrec]",
            "--set", "eval.teacher_hint=true"]
    assert main(argv) == 0
    test_file = next((run / "candidates").glob("test-*.jsonl"))
    assert main(["evaluate", "--run", str(run), "--candidates", str(test_file)]) == 0
    rows = json.loads((run / "evaluations" / f"{test_file.stem}.metrics.json").read_text())["rows"]
    first = json.loads((run / "metrics.json").read_text())["rows"]
    assert list(rows) == list(first) == ["popularity", "sasrec", "delrec", "delrec+hint"]
    assert rows["delrec+hint"]["ndcg@5"] == pytest.approx(first["delrec+hint"]["ndcg@5"])
    # its training hints came from the teacher trained before the training targets (eval.hint_train_teacher)
    hint_teacher = json.loads((run / "teacher" / "sasrec-before-targets" / "done.json").read_text())
    assert hint_teacher["model"] == "sasrec" and "before" in hint_teacher["trained_on"]


def test_prompt_says_its_teacher_slots_are_stand_ins(capsys):
    assert main(["prompt", "--config", str(ROOT / "configs/demo.yaml"), "--task", "rps"]) == 0
    out = capsys.readouterr().out
    assert "stand-ins" in out and "not a trained SASRec's" in out


def test_bad_config_key_is_one_line_error(capsys):
    assert main(["run", "--config", str(ROOT / "configs/demo.yaml"), "--set", "stage1.nope=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "stage1.nope" in err and "\n" not in err


def test_teacher_cache_key_ignores_the_other_reported_teachers(tmp_path):
    from delrec.config import load_config
    from delrec.runs import RunDir

    run = RunDir(tmp_path)
    one = load_config(None, ["teacher.models=[sasrec]"])
    two = load_config(None, ["teacher.models=[sasrec,caser]"])
    wider = load_config(None, ["teacher.models=[sasrec]", "teacher.hidden=32"])
    assert run.teacher_key(one, "sasrec") == run.teacher_key(two, "sasrec")
    assert run.stage1_key(one, "delrec") == run.stage1_key(two, "delrec")
    assert run.teacher_key(one, "sasrec") != run.teacher_key(wider, "sasrec")


def test_a_new_key_at_its_default_keeps_earlier_stage_folders(tmp_path):
    from delrec.config import load_config
    from delrec.runs import RunDir, digest

    run, cfg = RunDir(tmp_path), load_config(None, [])
    older = {k: v for k, v in vars(cfg.lm).items() if k != "title_years"}  # an LM config before the key
    assert digest(cfg.lm.settings()) == digest(older)
    short = load_config(None, ["lm.title_years=false"])
    assert run.stage1_key(short, "delrec") != run.stage1_key(cfg, "delrec")


def test_a_copied_run_evaluates_and_recommends_from_another_directory(demo_run, tmp_path, monkeypatch, capsys):
    moved = tmp_path / "elsewhere" / "demo"
    shutil.copytree(demo_run, moved)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # neither the run's old parent nor its new one
    hidden = demo_run.with_name("demo-hidden")
    demo_run.rename(hidden)  # the copy must not lean on the original's files
    try:
        test_file = next((moved / "candidates").glob("test-*.jsonl"))
        assert main(["evaluate", "--run", str(moved), "--candidates", str(test_file)]) == 0
        assert (moved / "evaluations" / f"{test_file.stem}.metrics.json").exists()
        assert main(["recommend", "--run", str(moved), "--history", "i0,i1,i2", "--candidates", "i3,i50"]) == 0
    finally:
        hidden.rename(demo_run)
    assert "i50" in capsys.readouterr().out
    for done in moved.glob("stage2/*/done.json"):
        soft = json.loads(done.read_text())["soft_prompt"]
        assert soft is None or soft.startswith("stage1/"), soft


def test_paths_written_by_older_runs_resolve_inside_the_run(tmp_path):
    from delrec.recommend import stored_path

    run = tmp_path / "demo"
    (run / "stage1" / "delrec-1").mkdir(parents=True)
    (run / "stage1" / "delrec-1" / "soft_prompt.safetensors").write_bytes(b"")
    want = run / "stage1" / "delrec-1" / "soft_prompt.safetensors"
    for stored in ("stage1/delrec-1/soft_prompt.safetensors", "runs/demo/stage1/delrec-1/soft_prompt.safetensors",
                   "/old/place/demo/stage1/delrec-1/soft_prompt.safetensors"):
        assert stored_path(run, stored) == want, stored
    assert stored_path(run, None) is None


def test_teacher_hint_ranks_the_examples_own_candidates():
    import torch

    from delrec.data.candidates import CandidateSet
    from delrec.lm_rows import candidate_hints

    class ByIdTeacher:  # prefers higher item ids
        def scores(self, histories):
            return torch.arange(50, dtype=torch.float).repeat(len(histories), 1)

    sets = [CandidateSet(0, (1, 2), (7, 30, 3, 12), 3), CandidateSet(1, (4,), (5, 41, 9, 2), 5)]
    assert candidate_hints(ByIdTeacher(), sets, 2, chunk=1) == [[30, 12], [41, 9]]


def test_the_residual_prior_is_the_teachers_log_probability_among_the_examples_own_candidates():
    import math
    import random

    import torch

    from delrec.data.candidates import CandidateSet
    from delrec.lm_rows import candidate_priors
    from delrec.prompts.examples import PromptExample
    from delrec.stages.batches import with_sampled_negatives

    class ByIdTeacher:  # prefers higher item ids, by one logit per id
        def scores(self, histories):
            return torch.arange(50, dtype=torch.float).repeat(len(histories), 1)

    sets = [CandidateSet(0, (1, 2), (7, 30, 3, 12), 3), CandidateSet(1, (4,), (5, 41, 9, 2), 5)]
    priors = candidate_priors(ByIdTeacher(), sets, chunk=1)
    for c, p in zip(sets, priors):
        assert sum(math.exp(x) for x in p) == pytest.approx(1.0, abs=1e-5)
        for j, item in enumerate(c.candidates):  # log-softmax of the logits over this example's candidates
            assert p[j] - p[0] == pytest.approx(item - c.candidates[0], abs=1e-5)
    e = PromptExample("lsr", "p", ("a", "b", "c", "d"), (7, 30, 3, 12), 2, prior=priors[0])
    kept = with_sampled_negatives(e, 2, random.Random(0))
    assert len(kept.prior) == 3 and kept.candidates[kept.label] == "c"
    assert [kept.prior[i] for i in range(3)] == [priors[0]["abcd".index(t)] for t in kept.candidates]


def test_the_residual_row_trains_on_the_before_targets_teachers_prior_and_scores_lm_plus_prior(
        demo_run, tmp_path, monkeypatch):
    """delrec+residual: its training examples carry the prior of the teacher trained before the training
    targets (as the hint row's hints), its validation and test examples that of the run's teacher, and the
    scores it stores are its LM's plus that prior."""
    import numpy as np

    from delrec import steps
    from delrec.lm_rows import candidate_priors

    seen = {}
    real_lsr, real_before = steps.lsr_examples, steps.teacher_before_targets

    def before(ctx, teacher, which):
        seen["ctx"], seen["run_teacher"], seen["before"] = ctx, teacher, real_before(ctx, teacher, which)
        return seen["before"]

    def lsr(cfg, builder, sets, soft, hint=None, slots=False, prior=None):
        seen.setdefault("priors", []).append(prior)
        return real_lsr(cfg, builder, sets, soft, hint, slots, prior)

    monkeypatch.setattr(steps, "teacher_before_targets", before)
    monkeypatch.setattr(steps, "lsr_examples", lsr)
    run = tmp_path / "residual"
    shutil.copytree(demo_run, run)
    assert main(["run", "--config", str(ROOT / "configs/demo.yaml"), "--out", str(run), "--set", "stage2.steps=4",
                 "--set", "stage2.warmup=1", "--set", "stage2.eval_every=4",
                 "--set", "eval.methods=[popularity, teachers, delrec]", "--set", "eval.teacher_residual=true"]) == 0
    train_prior, valid_prior = [p for p in seen["priors"] if p is not None]  # the other rows' carry none
    assert train_prior is seen["before"] and valid_prior is seen["run_teacher"] and train_prior is not valid_prior
    assert list(json.loads((run / "metrics.json").read_text())["rows"])[-1] == "delrec+residual"
    folder = next((run / "stage2").glob("delrec+residual-*"))
    prior = np.array(candidate_priors(seen["run_teacher"], seen["ctx"].cands["test"]))
    stored = np.load(folder / "test_scores.npy")
    assert stored.shape == prior.shape
    lm_part = stored - prior  # what the LM adds: not the prior alone, and not constant across candidates
    assert np.abs(lm_part).max() > 1e-3 and np.ptp(lm_part, axis=1).max() > 1e-4
    # the validation curve's reference, the prior alone on the validation users stage 2 selects on
    from delrec.evaluate import ndcg5

    logged = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"prior_valid"' in x]
    valid = seen["ctx"].cands["valid"][:seen["ctx"].cfg.stage2.max_eval_examples]
    want = ndcg5(np.array(candidate_priors(seen["run_teacher"], valid)), [c.target_index for c in valid])
    assert [e["valid"] for e in logged] == [pytest.approx(float(want))]


def test_the_run_stamp_names_the_commit():
    import re

    from delrec.runs import git_commit

    commit = git_commit()
    if shutil.which("git") and (ROOT / ".git").exists():  # a checkout (a worktree's .git is a file)
        assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?", commit or ""), commit
    else:
        assert commit is None


def test_fusion_rows_pick_w_on_validation_and_score_in_evaluate_and_recommend(demo_run, tmp_path, capsys):
    """eval.fusion on a finished run (a copy of the demo): the trained adapters score the validation file
    once, each `<lm>+fusion` row and the `teacher-ensemble` control pick their teacher and w there, and
    `delrec evaluate` / `delrec recommend --method` apply the stored choice."""
    import numpy as np

    from delrec.config import load_config
    from delrec.fusion import fusion_rows
    from delrec.pipeline import prepare
    from delrec.recommend import trained_teachers

    run = tmp_path / "fused"
    shutil.copytree(demo_run, run)
    argv = ["run", "--config", str(ROOT / "configs/demo.yaml"), "--out", str(run), "--set", "eval.fusion=true",
            "--set", "teacher.models=[sasrec, gru4rec]"]
    assert main(argv) == 0
    rows = json.loads((run / "metrics.json").read_text())["rows"]
    assert {"lsr-only+fusion", "delrec+fusion", "teacher-ensemble"} <= set(rows)
    cfg = load_config(str(run / "config.yaml"))
    assert {"lsr-only+ensemble", "delrec+ensemble"} <= set(rows)
    for name in ("lsr-only+fusion", "delrec+fusion", "teacher-ensemble", "delrec+ensemble"):
        choice = rows[name]["fusion"]
        assert choice["w" if choice["lm"] else "w_second"] in cfg.eval.fusion_weights
        assert len(rows[name]["ranks"]) == rows[name]["n"]
        # w = 0 is the teacher alone, so the chosen pair is at least as good on validation
        base = "teacher-ensemble" if name.endswith("+ensemble") else choice["teacher"]
        assert choice["valid_ndcg@5"] >= choice["valid_grid"][f"{base}/w=0"] - 1e-5  # grid: 5 decimals
    assert len(rows["delrec+fusion"]["fusion"]["valid_grid"]) == 2 * len(cfg.eval.fusion_weights)

    # the choice never looks at the test file: other test candidates and other LM test scores, same choice
    ctx = prepare(cfg)
    teachers = trained_teachers(run, cfg)
    before = fusion_rows(ctx.run, cfg, teachers, ctx.cands, set(rows))
    for score_file in (run / "stage2").glob("*/test_scores.npy"):
        np.save(score_file, np.random.default_rng(1).normal(size=np.load(score_file).shape))
    ctx.cands["test"] = [type(c)(c.user, c.history, c.candidates[::-1], c.target) for c in ctx.cands["test"]]
    after = fusion_rows(ctx.run, cfg, teachers, ctx.cands, set(rows))
    assert {m: r["fusion"] for m, r in after.items()} == {m: r["fusion"] for m, r in before.items()}
    assert any(after[m]["ranks"] != before[m]["ranks"] for m in after)

    shutil.rmtree(run / "stage2")  # evaluate/recommend need the adapters: take them from the untouched copy
    shutil.copytree(demo_run / "stage2", run / "stage2")
    test_file = next((run / "candidates").glob("test-*.jsonl"))
    assert main(["evaluate", "--run", str(run), "--candidates", str(test_file)]) == 0
    scored = json.loads((run / "evaluations" / f"{test_file.stem}.metrics.json").read_text())["rows"]
    for name in ("lsr-only+fusion", "delrec+fusion", "teacher-ensemble", "delrec+ensemble"):
        assert scored[name]["ranks"] == rows[name]["ranks"]
    capsys.readouterr()
    assert main(["recommend", "--run", str(run), "--history", "i0,i1,i2", "--method", "delrec+fusion"]) == 0
    head = capsys.readouterr().out.splitlines()
    assert head[0].startswith("method: delrec+fusion") and "standardised score" in head[3]


def test_every_row_of_the_method_table_runs_and_scores_everywhere(demo_run, tmp_path, capsys):
    """The method table (delrec.methods) end to end: a copy of the demo run with every switch on reports each
    row in the table's order in metrics.json, `delrec evaluate` scores the same rows with the same ranks, and
    `delrec recommend --method` ranks with each trained or fused row."""
    from delrec.methods import METHODS

    run = tmp_path / "every-row"
    shutil.copytree(demo_run, run)
    argv = ["run", "--config", str(ROOT / "configs/demo.yaml"), "--out", str(run), "--set", "stage2.steps=4",
            "--set", "stage2.warmup=1", "--set", "stage2.eval_every=4", "--set", "stage1.steps=4",
            "--set", "stage1.eval_every=4", "--set", "teacher.models=[sasrec, gru4rec]",
            "--set", "eval.ablations=true", "--set", "eval.teacher_hint=true", "--set", "eval.fusion=true",
            "--set", "eval.user_prompt=true", "--set", "eval.hybrid_tokens=true", "--set", "eval.hybrid_curriculum=true",
            "--set", "eval.teacher_residual=true"]
    assert main(argv) == 0
    rows = json.loads((run / "metrics.json").read_text())["rows"]
    want = ["popularity", "sasrec", "gru4rec", *(m for m in METHODS if m not in ("popularity", "teachers"))]
    assert list(rows) == want
    test_file = next((run / "candidates").glob("test-*.jsonl"))
    assert main(["evaluate", "--run", str(run), "--candidates", str(test_file)]) == 0
    scored = json.loads((run / "evaluations" / f"{test_file.stem}.metrics.json").read_text())["rows"]
    assert list(scored) == want
    for name in want:
        assert scored[name]["ranks"] == rows[name]["ranks"], name
    for name, m in METHODS.items():
        if m.stage2 or m.kind == "fused":
            capsys.readouterr()
            assert main(["recommend", "--run", str(run), "--history", "i0,i1,i2", "--method", name, "--top", "3"]) == 0
            out = capsys.readouterr().out.splitlines()
            assert out[0].startswith(f"method: {name} ") and len(out) >= 4 + 3, out
    assert main(["recommend", "--run", str(run), "--history", "i0,i1", "--method", "lm-zero-shot"]) == 2
    assert "has not been trained" in capsys.readouterr().err

    assert_validation_rescored(run, argv, ("delrec", "delrec+hint", "delrec+user", "delrec+hybrid", "delrec+residual"))


def assert_validation_rescored(run, argv, names) -> None:
    """A finished row without validation scores (fusion turned on after training) gets them from its stored
    adapter, projector and teacher: the same scores stage 2 wrote at the end of training."""
    import numpy as np

    written = {}  # stage2/<row>-<key> of this run (a copied demo's own folders have no validation scores)
    for scores in (run / "stage2").glob("delrec*/valid_scores.npy"):
        if scores.parent.name.rsplit("-", 1)[0] in names:
            written[scores] = np.load(scores)
            scores.unlink()
    assert len(written) == len(names), sorted(written)
    assert main(argv) == 0
    for scores, before in written.items():
        np.testing.assert_allclose(np.load(scores), before, rtol=1e-4, atol=1e-4, err_msg=str(scores))


def test_the_upper_teacher_prompts_run_on_a_decoder_and_score_the_same_everywhere(demo_run, tmp_path, capsys):
    """delrec+user and delrec+hybrid at eval.projector_at=upper (a decoder-only LM, adapters on the top block over stored lower states):
    trained in `delrec run`, rescored by `delrec evaluate` with the same ranks, ranked by `delrec recommend`."""
    run = tmp_path / "user-upper"
    shutil.copytree(demo_run, run)  # the teachers are reused; the LM, stage 1 and stage 2 are new
    argv = ["run", "--config", str(ROOT / "configs/demo.yaml"), "--out", str(run), "--set", "lm.backbone=tiny-random-llama",
            "--set", "stage1.steps=4", "--set", "stage1.eval_every=4", "--set", "stage2.steps=6",
            "--set", "stage2.warmup=1", "--set", "stage2.eval_every=3", "--set", "stage2.train_layers=1",
            "--set", "eval.methods=[popularity, teachers, delrec]", "--set", "eval.user_prompt=true",
            "--set", "eval.projector_at=upper", "--set", "eval.hybrid_tokens=true", "--set", "eval.fusion=true"]
    assert main(argv) == 0
    rows = json.loads((run / "metrics.json").read_text())["rows"]
    assert list(rows)[:5] == ["popularity", "sasrec", "delrec", "delrec+user", "delrec+hybrid"]
    assert {"delrec+user+fusion", "delrec+hybrid+fusion"} <= set(rows)
    assert (next((run / "stage2").glob("delrec+user-*")) / "user_prompt.safetensors").exists()
    assert (next((run / "stage2").glob("delrec+hybrid-*")) / "hybrid_prompt.safetensors").exists()
    test_file = next((run / "candidates").glob("test-*.jsonl"))
    assert main(["evaluate", "--run", str(run), "--candidates", str(test_file)]) == 0
    scored = json.loads((run / "evaluations" / f"{test_file.stem}.metrics.json").read_text())["rows"]
    for name in ("delrec+user", "delrec+hybrid"):
        assert scored[name]["ranks"] == rows[name]["ranks"], name
        capsys.readouterr()
        assert main(["recommend", "--run", str(run), "--history", "i0,i1,i2", "--method", name, "--top", "3"]) == 0
        assert capsys.readouterr().out.startswith(f"method: {name} ")
    assert_validation_rescored(run, argv, ("delrec+user", "delrec+hybrid"))
