"""Lower-layer states on disk (stage2.lower_states_dir): exact reuse, a clear error for a foreign file, and
a location key that never changes a stage's folder or blocks --resume."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
from helpers import lsr_examples, tiny_scorer, world
from test_layer_cache import CANDS, PROMPTS, _adapted

from delrec import DelrecError
from delrec.config import RunConfig, Stage2Config, load_config
from delrec.lm.adapters import add_adalora, first_adapted_block
from delrec.lm.layer_cache import UpperLayerScorer
from delrec.lm.lower_store import LowerStateFile, load_states, states_digest, store_path
from delrec.lm.scoring import CandidateScorer
from delrec.lm.soft_prompt import SoftPrompt
from delrec.prompts.examples import PromptBuilder
from delrec.runs import RunDir
from delrec.stages.finetune import finetune
from delrec.stages.loop import Trainer


def test_states_read_back_score_exactly_without_a_lower_pass(tmp_path):
    bb, _ = _adapted("llama")
    scorer = CandidateScorer(bb)
    first = UpperLayerScorer(scorer, first_adapted_block(bb, 1))
    before = first.score(PROMPTS, CANDS, None)
    LowerStateFile(first, None, str(tmp_path)).save_if_grown()
    again = UpperLayerScorer(scorer, first_adapted_block(bb, 1))
    keep = LowerStateFile(again, None, str(tmp_path))
    assert keep.written == len(PROMPTS)
    assert torch.equal(again.score(PROMPTS, CANDS, None), before)
    assert again.lower_rows == 0  # every (prompt, title) came from the file
    other = LowerStateFile(UpperLayerScorer(scorer, first_adapted_block(bb, 1)), None, str(tmp_path),
                           stage="stage2/delrec+hint")
    assert other.written == 0 and other.path != keep.path  # another method's prompts: its own file


def test_the_file_is_named_by_what_the_states_depend_on(tmp_path):
    bb, _ = _adapted("llama")
    scorer = CandidateScorer(bb)
    soft = SoftPrompt.create(3, bb, init="normal", seed=0)
    other = SoftPrompt.create(3, bb, init="normal", seed=1)
    d = {s: states_digest(scorer, 1, p, torch.bfloat16) for s, p in (("none", None), ("a", soft), ("b", other))}
    assert len(set(d.values())) == 3
    assert states_digest(scorer, 1, soft, torch.bfloat16) == d["a"]
    fast = UpperLayerScorer(scorer, 1)
    fast.score(PROMPTS, CANDS, None)
    LowerStateFile(fast, None, str(tmp_path)).save_if_grown()
    store_path(tmp_path, d["none"]).rename(store_path(tmp_path, d["a"]))  # a renamed file must not be trusted
    with pytest.raises(DelrecError, match="another backbone or soft prompt"):
        load_states(UpperLayerScorer(scorer, 1).cache, store_path(tmp_path, d["a"]), d["a"])
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(DelrecError, match="junk.safetensors.*delete it"):
        load_states(fast.cache, bad, d["none"])


def test_location_key_keeps_the_stage_folder_and_allows_resume(tmp_path):
    cfg = RunConfig()
    moved = load_config(None, [f"stage2.lower_states_dir={tmp_path}"])
    run = RunDir(tmp_path)
    assert run.stage2_dir(cfg, "delrec", "k") == run.stage2_dir(moved, "delrec", "k")
    assert "lower_states_dir" not in cfg.stage2.settings() and cfg.stage2.settings()["steps"] == cfg.stage2.steps
    changed = load_config(None, ["stage2.steps=700"])
    assert run.stage2_dir(cfg, "delrec", "k") != run.stage2_dir(changed, "delrec", "k")
    saved = dataclasses.asdict(cfg.stage2)  # what a checkpoint stores
    Trainer._check_config(SimpleNamespace(cfg=moved.stage2, ckpt_path="ckpt"), saved)  # no error
    with pytest.raises(DelrecError, match="stage2.steps"):
        Trainer._check_config(SimpleNamespace(cfg=changed.stage2, ckpt_path="ckpt"), saved)


def test_finetune_writes_the_states_once_and_a_rerun_reads_them(tmp_path):
    torch.manual_seed(0)
    ds, split = world()
    builder = PromptBuilder(ds.catalog, ds.domain, "sasrec", 4, 8, list_candidates=False)
    train, valid = lsr_examples(ds, split, builder, soft=False)
    train, valid = train[:6], valid[:4]
    store = tmp_path / "states"
    logs = []
    for i in range(2):  # the second run starts from the first run's file: its lower pass is skipped
        scorer = tiny_scorer(ds, "llama")
        cfg = Stage2Config(steps=4, batch_size=3, lr=0.01, warmup=0, eval_every=4, max_eval_examples=4,
                          init_r=4, target_r=2, train_layers=1, lower_states_dir=str(store))
        add_adalora(scorer.backbone, cfg)
        finetune(scorer, None, train, valid, cfg, tmp_path / f"run{i}", seed=0)
        logs.append([json.loads(line) for line in (tmp_path / f"run{i}" / "log.jsonl").read_text().splitlines()])
    files = list(store.glob("lower-*.safetensors"))
    assert len(files) == 1
    loaded = [r for r in logs[1] if r.get("event") == "lower_states"]
    assert loaded and loaded[0]["loaded"] == len({e.prompt for e in train + valid})
    assert not any(r.get("event") == "lower_states" for r in logs[0])
