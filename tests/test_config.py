"""Run configuration: unknown keys and wrong types are named, CLI overrides parse, save/reload round-trips."""

import re
from pathlib import Path

import pytest

from delrec import DelrecError
from delrec.config import (
    DataConfig,
    EvalConfig,
    LMConfig,
    RunConfig,
    Stage1Config,
    Stage2Config,
    TeacherConfig,
    load_config,
)
from delrec.methods import EVAL_METHODS, METHODS

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_validate():
    cfg = load_config()
    assert cfg == RunConfig() and cfg.data.protocol == "leave-one-out" and cfg.stage2.steps == 300


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(DelrecError, match="'data.datset'"):
        load_config(None, ["data.datset=ml-100k"])
    p = tmp_path / "c.yaml"
    p.write_text("teacher:\n  hiden: 64\n")
    with pytest.raises(DelrecError, match="'teacher.hiden'"):
        load_config(str(p))


@pytest.mark.parametrize("override,key", [("data.n_candidates=abc", "data.n_candidates"),
                                          ("stage1.lr=fast", "stage1.lr"),
                                          ("data.allow_pickle=maybe", "data.allow_pickle"),
                                          ("data.n_candidates=2.5", "data.n_candidates")])
def test_wrong_type_is_named(override, key):
    with pytest.raises(DelrecError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_wrong_type_in_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  max_history: [1, 2]\n")
    with pytest.raises(DelrecError, match=r"data\.max_history: expected int"):
        load_config(str(p))


def test_set_overrides_parse_numbers_and_lists(tmp_path):
    cfg = load_config(None, ["stage1.lr=5e-3", "stage2.weight_decay=1e-6", "data.seed=7",
                             "teacher.models=[sasrec, caser]", "data.allow_pickle=true",
                             "data.protocol=predefined", "lm.n_soft=0",  # 0 is fine without a soft prompt:
                             "eval.methods=[popularity, teachers, lsr-only]"])
    assert cfg.stage1.lr == 0.005 and isinstance(cfg.stage1.lr, float) and cfg.stage2.weight_decay == 1e-6
    assert cfg.data.seed == 7 and cfg.teacher.models == ["sasrec", "caser"] and cfg.data.allow_pickle is True
    assert cfg.stage2.steps == 300  # stage 2 keeps its own defaults when only one key is set
    p = tmp_path / "c.yaml"
    p.write_text("stage1:\n  lr: 5e-3\n")  # YAML 1.1 reads 5e-3 as a string; it must still parse
    assert load_config(str(p)).stage1.lr == 0.005


def test_validation_errors_name_the_setting():
    with pytest.raises(DelrecError, match="data.protocol"):
        load_config(None, ["data.protocol=random"])
    with pytest.raises(DelrecError, match="stage1.warmup"):
        load_config(None, ["stage1.steps=10", "stage1.warmup=20"])
    with pytest.raises(DelrecError, match="expected section.key=value"):
        load_config(None, ["data.seed"])
    with pytest.raises(DelrecError, match="config file not found"):
        load_config("/nonexistent/x.yaml")


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(None, ["data.dataset=ml-100k", "data.columns={user: uid}", "stage1.lr=5e-3",
                             "teacher.models=[gru4rec]", "eval.ablations=true", "out=runs/x"])
    cfg.save(tmp_path / "run.yaml")
    again = load_config(str(tmp_path / "run.yaml"))
    assert again == cfg and again.data.columns == {"user": "uid"}


# ---- each section validates itself on creation; one bad value each, the message names the key ------------

@pytest.mark.parametrize("build,key", [
    (lambda: Stage1Config(steps=-5), "stage1.steps"),
    (lambda: Stage2Config(batch_size=0), "stage2.batch_size"),
    (lambda: TeacherConfig(models=[]), "teacher.models"),
    (lambda: TeacherConfig(models=["bert4rec"]), "teacher.models"),
    (lambda: TeacherConfig(hidden=30, heads=4), "teacher.hidden"),
    (lambda: TeacherConfig(heads=0), "teacher.heads"),
    (lambda: TeacherConfig(epochs=0), "teacher.epochs"),
    (lambda: Stage2Config(init_r=4, target_r=8), "stage2.init_r"),
    (lambda: Stage1Config(steps=10, warmup=0, eval_every=20), "stage1.eval_every"),
    (lambda: Stage2Config(eval_every=0), "stage2.eval_every"),
    (lambda: DataConfig(dataset="ML-100K"), "data.dataset"),
    (lambda: DataConfig(dataset="ml100k"), "data.dataset"),
    (lambda: DataConfig(dataset=""), "data.dataset"),
    (lambda: DataConfig(format="parquet"), "data.format"),
    (lambda: DataConfig(protocol="random"), "data.protocol"),
    (lambda: LMConfig(dtype="fp8"), "lm.dtype"),
    (lambda: LMConfig(scorer="bm25"), "lm.scorer"),
    (lambda: EvalConfig(methods=["delrec+hint"]), "eval.methods"),
    # numeric ranges: refused when the config is read, before any teacher trains
    (lambda: Stage1Config(lr=-1e-3), "stage1.lr"),
    (lambda: Stage2Config(lr=0.0), "stage2.lr"),
    (lambda: Stage2Config(lr=float("nan")), "stage2.lr"),
    (lambda: TeacherConfig(lr=-0.1), "teacher.lr"),
    (lambda: TeacherConfig(dropout=1.0), "teacher.dropout"),
    (lambda: Stage2Config(lora_dropout=-0.1), "stage2.lora_dropout"),
    (lambda: Stage1Config(weight_decay=-1e-5), "stage1.weight_decay"),
    (lambda: TeacherConfig(weight_decay=-1.0), "teacher.weight_decay"),
    (lambda: Stage2Config(max_grad_norm=0.0), "stage2.max_grad_norm"),
    (lambda: Stage1Config(alpha=-0.5), "stage1.alpha"),
    (lambda: EvalConfig(hint_k=0), "eval.hint_k"),
    (lambda: EvalConfig(projector_rank=0), "eval.projector_rank"),
    (lambda: EvalConfig(projector_teacher="cross-fitted"), "eval.projector_teacher"),
    (lambda: EvalConfig(projector_at="middle"), "eval.projector_at"),
    (lambda: RunConfig(stage2=Stage2Config(train_layers=0), eval=EvalConfig(hybrid_tokens=True, projector_at="upper")),
     "eval.projector_at"),
    (lambda: EvalConfig(bootstrap=-1), "eval.bootstrap"),
    (lambda: DataConfig(max_eval_examples=-5), "data.max_eval_examples"),
    (lambda: LMConfig(backbone=" "), "lm.backbone"),
    (lambda: RunConfig(lm=LMConfig(n_soft=0)), "lm.n_soft"),
    (lambda: RunConfig(lm=LMConfig(n_soft=0), eval=EvalConfig(methods=["lsr-only"], teacher_hint=True)),
     "lm.n_soft"),
    (lambda: RunConfig(lm=LMConfig(n_soft=0), eval=EvalConfig(methods=["lsr-only"], user_prompt=True)),
     "lm.n_soft"),
    # index-letter lists every candidate under its letter: sampled negatives would relabel them
    (lambda: RunConfig(lm=LMConfig(scorer="index-letter", list_candidates=True),
                       stage2=Stage2Config(train_negatives=7)), "stage2.train_negatives"),
    (lambda: RunConfig(lm=LMConfig(scorer="index-letter", list_candidates=True),
                       stage1=Stage1Config(train_negatives=3)), "stage1.train_negatives"),
])
def test_each_section_validates_on_creation(build, key):
    with pytest.raises(DelrecError, match=re.escape(key)) as err:
        build()
    assert "\n" not in str(err.value)


def test_stage_sections_have_their_own_keys_and_defaults():
    with pytest.raises(DelrecError, match="'stage1.init_r'"):  # AdaLoRA settings mean nothing in stage 1
        load_config(None, ["stage1.init_r=999"])
    with pytest.raises(DelrecError, match="'stage2.alpha'"):
        load_config(None, ["stage2.alpha=0.3"])
    cfg = load_config(None, ["stage2.lr=3e-4"])
    assert isinstance(cfg.stage2, Stage2Config) and cfg.stage2 == Stage2Config(lr=3e-4)
    assert cfg.stage1 == Stage1Config() and (cfg.stage1.steps, cfg.stage2.steps) == (200, 300)
    assert LMConfig(n_soft=0).n_soft == 0  # allowed when no soft-prompt method is run (RunConfig checks)
    assert DataConfig(dataset="my-shop").dataset == "my-shop"  # any other name: format detected from files


def test_cross_section_checks_surface_from_the_cli(capsys):
    from delrec.cli import main

    assert main(["prepare", "--set", "data.dataset=ML-100K"]) == 2
    assert main(["distill", "--set", "lm.n_soft=0"]) == 2
    assert main(["teach", "--model", "sasrec", "--set", "teacher.hidden=30", "--set", "teacher.heads=4",
                 "--set", "teacher.models=[gru4rec]"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    keys = ["data.dataset", "lm.n_soft", "teacher.hidden"]
    assert len(errors) == 3 and all(e.startswith(f"delrec: error: {k}") for e, k in zip(errors, keys)), errors


def test_choice_lists_are_the_ones_the_code_uses():
    from delrec import choices
    from delrec.teachers import TEACHERS

    assert set(TEACHERS) == set(choices.TEACHER_NAMES)
    assert {m.name for m in METHODS.values() if m.stage1_tasks} <= set(EVAL_METHODS)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_loads_with_what_it_sets(name):
    # A preset that the validation rejects is a broken install for whoever copies its command, and one whose
    # settings are dropped or renamed on the way in silently runs another experiment: every value the YAML
    # file writes must be the loaded config's value.
    import yaml

    cfg = load_config(str(ROOT / "configs" / name)).to_dict()
    written = yaml.safe_load((ROOT / "configs" / name).read_text())

    def leaves(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    checked = 0
    for key, value in leaves(written):
        loaded = cfg
        for part in key.split("."):
            loaded = loaded[part]
        assert loaded == value, f"{name}: {key} is {loaded!r} after loading, the file says {value!r}"
        checked += 1
    assert checked >= 10 and cfg["data"]["dataset"] == written["data"]["dataset"]
