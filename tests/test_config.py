"""Run configuration: unknown keys and wrong types are named, CLI overrides parse, save/reload round-trips."""

import pytest

from delrec import DelrecError
from delrec.config import RunConfig, load_config


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
                             "data.protocol=predefined", "lm.n_soft=0"])
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
