"""Two real gloo processes (torchrun's situation): pooled lower-layer states, and the main process's threads."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp


def _entry(i: int, n_titles: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(i)
    prompt = torch.randn(3 + i % 4, 8, generator=g)
    return prompt, {f"t{i}.{j}": torch.randn(1 + j, 8, generator=g) for j in range(n_titles)}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    import torch.distributed as tdist

    from delrec.lm import layer_cache
    from delrec.lm.layer_cache import LowerStateCache, share_across_processes

    layer_cache.SHARE_CHUNK = 64  # several broadcasts per process, as for a multi-GB cache
    cache = LowerStateCache()
    mine = range(rank, 10, 2)  # the examples this process trained on in its first epoch
    for i in mine:
        cache.add(f"p{i}", *_entry(i, 2 + i % 3))
    cache.add("valid", *_entry(99, 1))  # not a training prompt: stays where it is
    keys = {f"p{i}" for i in range(10)}
    got = share_across_processes(cache, keys)
    again = share_across_processes(cache, keys)  # everyone holds everything now: nothing travels
    ok = got == 5 and again == 0 and keys <= set(cache.rows)
    for i in range(10):
        prompt, titles = _entry(i, 2 + i % 3)
        held, by_title = cache.rows[f"p{i}"]
        ok &= torch.equal(held, prompt.to(torch.bfloat16)) and set(by_title) == set(titles)
        ok &= all(torch.equal(by_title[t], s.to(torch.bfloat16)) for t, s in titles.items())
    with open(f"{out}.{rank}", "w") as f:
        f.write(f"{ok} {got} {again} {len(cache.rows)}")
    tdist.destroy_process_group()


def test_two_processes_pool_their_lower_states(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path / "r")), nprocs=2, join=True)
    for rank in range(2):
        assert (tmp_path / f"r.{rank}").read_text() == "True 5 0 11"


def _finetune_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    import json
    from pathlib import Path

    import torch.distributed as tdist
    from helpers import lsr_examples, tiny_scorer, world

    from delrec.config import Stage2Config
    from delrec.lm.adapters import add_adalora
    from delrec.lm.layer_cache import UpperLayerScorer
    from delrec.prompts.examples import PromptBuilder
    from delrec.stages.finetune import finetune

    torch.set_num_threads(1)
    passed = []  # prompts this process ran the lower blocks for
    prefetch = UpperLayerScorer.prefetch

    def counting(self, prompts, candidates, soft_prompt=None):
        passed.extend(p for p in dict.fromkeys(prompts) if p not in self.cache.rows)
        return prefetch(self, prompts, candidates, soft_prompt)

    UpperLayerScorer.prefetch = counting
    torch.manual_seed(0)
    ds, split = world()
    builder = PromptBuilder(ds.catalog, ds.domain, "sasrec", 4, 8, list_candidates=False)
    train, valid = lsr_examples(ds, split, builder, soft=False)
    train, valid = train[:6], valid[:4]
    scorer = tiny_scorer(ds, "llama")
    cfg = Stage2Config(steps=9, batch_size=2, lr=0.01, warmup=0, eval_every=9, max_eval_examples=4, init_r=4,
                       target_r=2, train_layers=1, lower_states_dir=str(Path(out).parent / "states"))
    add_adalora(scorer.backbone, cfg)
    finetune(scorer, None, train, valid, cfg, Path(out).parent / "run", seed=0)  # 3 epochs of 3 steps
    trained = {e.prompt for e in train}
    log = Path(out).parent / "run" / "log.jsonl"
    shared = [json.loads(x) for x in log.read_text().splitlines() if "lower_states_shared" in x] if rank == 0 else []
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"lower_passes": sum(p in trained for p in passed), "shared": shared}, f)
    tdist.barrier()
    tdist.destroy_process_group()


def test_torchrun_stage2_runs_each_lower_pass_once(tmp_path):
    """Three epochs of six examples over two processes: each process runs the lower blocks for the three
    examples of its first epoch and for none after, wherever later epochs put an example."""
    import json

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_finetune_worker, args=(port, str(tmp_path / "r")), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"r.{r}").read_text()) for r in range(2)]
    assert [r["lower_passes"] for r in ranks] == [3, 3]
    assert [(e["step"], e["received"]) for e in ranks[0]["shared"]] == [(3, 3)]


def test_the_main_process_takes_the_waiting_processes_threads(monkeypatch):
    from delrec import dist

    own = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # what torchrun gives each process
        for rank, expected in ((0, 2), (1, 1)):
            monkeypatch.setattr(dist, "world", lambda rank=rank: (rank, 2))
            with dist.main_takes_all_threads():
                assert torch.get_num_threads() == expected
            assert torch.get_num_threads() == 1
        monkeypatch.setattr(dist, "world", lambda: (0, 1))
        with dist.main_takes_all_threads():
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(own)
