"""Backbone, soft prompt, templates and candidate scorers on tiny random models (no download)."""

import warnings

import pytest
import torch

from delrec import DelrecError
from delrec.config import LMConfig
from delrec.lm.backbone import attention_target_modules, load_backbone, tiny_backbone
from delrec.lm.scoring import CandidateScorer, reference_title_likelihood
from delrec.lm.soft_prompt import SoftPrompt
from delrec.lm.tiny import tiny_tokenizer
from delrec.prompts import templates as T

HIST = ["Star Quest 1", "Star Quest 2", "Dragon Saga 1", "Dragon Saga 2", "Heist Files 3 (1997)",
        "Comet Club 2", "Banana Tales 1", "Banana Tales 2"]
CANDS = [["Star Quest 3", "Dragon Saga 3", "Noodle Nights 1 (1995)", "Crypt Tales 2", "Goal Legacy 4"],
         ["Banana Tales 3", "Wizard Files 1", "Fog Club 2 (2001)", "Orbit Saga 1", "Slam Quest 2"],
         ["Raven Nights 3", "Star Quest 4", "Comet Club 3", "Alibi Tales 1 (1993)", "Elf Club 2"]]
# Three prompts of different lengths, so the batch pads.
PROMPTS = [T.render_lsr("movie", "SASRec", HIST[:2], CANDS[0], False),
           T.render_rps("game", "GRU4Rec", HIST[:5], CANDS[1][1:3], CANDS[1], False),
           T.render_ta("movie", "SASRec", HIST[:4], HIST[3:], CANDS[2][1], CANDS[2], False)]
KINDS = ["t5", "llama", "gpt2"]


@pytest.fixture(scope="module")
def backbones():
    return {k: tiny_backbone(k) for k in KINDS}


def _soft(bb, n=6, seed=0):
    return SoftPrompt.create(n, bb, "vocab", seed)


PASSES = [("t5", "auto"), ("llama", "cached"), ("llama", "packed"), ("gpt2", "cached"), ("gpt2", "packed")]


@pytest.mark.parametrize("kind,candidate_pass", PASSES)
def test_title_likelihood_equals_reference(backbones, kind, candidate_pass):
    bb = backbones[kind]
    soft = _soft(bb)
    # chunk_rows: 0 = all 15 (prompt, title) rows in one continuation pass; 4 = four chunks of sorted rows.
    for norm, chunk in (("mean", 0), ("sum", 4), ("mean", 16)):
        scorer = CandidateScorer(bb, "title-likelihood", length_norm=norm, chunk_rows=chunk,
                                 candidate_pass=candidate_pass)
        with torch.no_grad():
            fast = scorer.score(PROMPTS, CANDS, soft)
            slow = reference_title_likelihood(bb, PROMPTS, CANDS, soft, length_norm=norm)
        assert fast.shape == (3, 5) and fast.dtype == torch.float32 and torch.isfinite(fast).all()
        assert fast.std() > 0.05  # the random model's scores really depend on the input
        assert torch.allclose(fast, slow, atol=1e-4), (fast - slow).abs().max()
    with torch.no_grad():  # without a soft prompt the marker is simply removed
        fast = CandidateScorer(bb, candidate_pass=candidate_pass).score(PROMPTS, CANDS, None)
        slow = reference_title_likelihood(bb, [p.replace(T.SOFT, "") for p in PROMPTS], CANDS, None)
    assert torch.allclose(fast, slow, atol=1e-4)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_packed_pass_matches_cached_in_value_and_gradient_under_any_attention(kind):
    bb = tiny_backbone(kind)
    soft = _soft(bb)
    labels = torch.tensor([0, 3, 1])
    grads = {}
    for impl in ("sdpa", "eager"):
        bb.model.set_attn_implementation(impl)
        for candidate_pass in ("cached", "packed"):
            soft.weight.grad = None
            scores = CandidateScorer(bb, candidate_pass=candidate_pass).score(PROMPTS, CANDS, soft)
            torch.nn.functional.cross_entropy(scores, labels).backward()
            grads[impl, candidate_pass] = (scores.detach(), soft.weight.grad.clone())
    ref_scores, ref_grad = grads["sdpa", "cached"]
    assert ref_grad.abs().sum() > 0
    for scores, grad in grads.values():
        assert torch.allclose(scores, ref_scores, atol=1e-4)
        assert torch.allclose(grad, ref_grad, atol=1e-5, rtol=1e-3)


def test_candidate_pass_is_validated(backbones):
    with pytest.raises(DelrecError, match="candidate_pass"):
        CandidateScorer(backbones["llama"], candidate_pass="fast")
    with pytest.raises(DelrecError, match="decoder-only"):
        CandidateScorer(backbones["t5"], candidate_pass="packed")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scorer_kind", ["title-likelihood", "first-token", "index-letter"])
def test_rows_do_not_depend_on_the_batch(backbones, kind, scorer_kind):
    bb, soft = backbones[kind], _soft(backbones[kind])
    prompts = PROMPTS if scorer_kind != "index-letter" else [p + " candidate" for p in PROMPTS]
    scorer = CandidateScorer(bb, scorer_kind)
    with torch.no_grad():
        batch = scorer.score(prompts, CANDS, soft)
        alone = torch.cat([scorer.score([p], [c], soft) for p, c in zip(prompts, CANDS)])
    assert batch.shape == (3, 5) and torch.isfinite(batch).all()
    assert torch.allclose(batch, alone, atol=1e-4), (batch - alone).abs().max()


@pytest.mark.parametrize("kind", KINDS)
def test_first_token_is_a_one_token_title_likelihood(backbones, kind):
    bb = backbones[kind]
    with torch.no_grad():
        first = CandidateScorer(bb, "first-token").score(PROMPTS, CANDS, _soft(bb))
        one = CandidateScorer(bb, max_title_tokens=1, append_eos=False).score(PROMPTS, CANDS, _soft(bb))
    assert torch.allclose(first, one, atol=1e-4)


@pytest.mark.parametrize("kind", ["t5", "llama"])
@pytest.mark.parametrize("scorer_kind", ["title-likelihood", "first-token", "index-letter"])
def test_gradients_reach_the_soft_prompt_and_nothing_else(backbones, kind, scorer_kind):
    bb = backbones[kind]
    soft = _soft(bb)
    scores = CandidateScorer(bb, scorer_kind, chunk_rows=4).score(PROMPTS, CANDS, soft)
    torch.nn.functional.cross_entropy(scores, torch.tensor([0, 1, 2])).backward()
    assert soft.weight.grad is not None and torch.isfinite(soft.weight.grad).all()
    assert soft.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in bb.model.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_changing_the_soft_prompt_changes_the_scores(backbones, kind):
    bb = backbones[kind]
    scorer = CandidateScorer(bb)
    with torch.no_grad():
        a = scorer.score(PROMPTS, CANDS, _soft(bb, seed=0))
        b = scorer.score(PROMPTS, CANDS, _soft(bb, seed=1))
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_adalora_wrapped_model_scores_and_trains_adapters(kind):
    from peft import AdaLoraConfig, get_peft_model

    bb = tiny_backbone(kind)
    targets = attention_target_modules(bb.model)
    cfg = AdaLoraConfig(init_r=4, target_r=2, lora_alpha=8, total_step=10, tinit=0, tfinal=0,
                        target_modules=targets, task_type="SEQ_2_SEQ_LM" if kind == "t5" else "CAUSAL_LM")
    bb.model = get_peft_model(bb.model, cfg)
    # Non-zero adapter B matrices, so the adapters change the outputs (peft starts them at zero).
    with torch.no_grad():
        for name, p in bb.model.named_parameters():
            if "lora_E" in name:
                p.normal_(0, 0.5)
    soft = _soft(bb)
    scorer = CandidateScorer(bb, chunk_rows=4)
    scores = scorer.score(PROMPTS, CANDS, soft)
    with torch.no_grad():
        assert torch.allclose(scores, scorer.reference(PROMPTS, CANDS, soft), atol=1e-4)
    torch.nn.functional.cross_entropy(scores, torch.tensor([0, 1, 2])).backward()
    lora = {n: p for n, p in bb.model.named_parameters() if p.requires_grad}
    assert lora and all(("lora_" in n) for n in lora)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora.items() if "lora_A" in n)
    assert soft.weight.grad.abs().sum() > 0
    assert attention_target_modules(bb.model) == targets  # works through the peft wrapper too


def test_bf16_autocast_runs(backbones):
    bb = backbones["llama"]
    with torch.no_grad():
        a = CandidateScorer(bb, autocast_bf16=True).score(PROMPTS, CANDS, _soft(bb))
        b = CandidateScorer(bb).score(PROMPTS, CANDS, _soft(bb))
    assert a.dtype == torch.float32 and torch.isfinite(a).all()
    assert (a - b).abs().max() < 0.2


def test_index_letter_and_first_token_inputs(backbones):
    bb = backbones["llama"]
    scorer = CandidateScorer(bb, "index-letter")
    assert len(set(scorer.letter_ids())) == 26
    with pytest.raises(DelrecError):
        scorer.score(["x is"], [[f"Star Quest {i}" for i in range(27)]])
    with pytest.raises(DelrecError, match="same"):
        CandidateScorer(bb).score(PROMPTS[:2], [CANDS[0], CANDS[1][:3]])
    with pytest.raises(DelrecError, match="at most once"):
        CandidateScorer(bb).score([PROMPTS[0] + T.SOFT], [CANDS[0]], _soft(bb))
    # Decoder-only titles are tokenised as a continuation: with their leading space.
    assert bb.tokenizer.convert_ids_to_tokens(scorer.title_ids("Star Quest 3"))[0].startswith("Ġ")


def test_long_prompts_are_cut_from_the_history_keeping_the_instruction(backbones):
    bb = backbones["gpt2"]
    soft = _soft(bb)
    long = T.render_lsr("movie", "SASRec", HIST * 12, CANDS[0], False)
    scorer = CandidateScorer(bb, max_prompt_tokens=160)
    full_ids, at = CandidateScorer(bb).prepare(long, True)
    with pytest.warns(UserWarning, match="max_prompt_tokens"):
        scores = scorer.score([long], [CANDS[0]], soft)
    ids, at2 = scorer.prepare(long, True)
    assert torch.isfinite(scores).all() and len(ids) + soft.n_soft == 160 and at2 == at
    assert ids[:at] == full_ids[:at] and ids[-40:] == full_ids[-40:]  # instruction and answer slot kept
    with warnings.catch_warnings(), pytest.raises(DelrecError, match="max_prompt_tokens"):
        warnings.simplefilter("ignore")
        CandidateScorer(bb, max_prompt_tokens=20).score([long], [CANDS[0]], soft)


def test_soft_prompt_create_save_load(backbones, tmp_path):
    bb = backbones["t5"]
    soft = SoftPrompt.create(7, bb, "vocab", seed=3)
    table = bb.input_embeddings().weight
    assert soft.weight.shape == (7, bb.embed_dim) and soft.weight.requires_grad
    assert all((table == row).all(1).any() for row in soft.weight.detach())  # copies of vocabulary rows
    assert torch.equal(soft.weight, SoftPrompt.create(7, bb, "vocab", seed=3).weight)
    normal = SoftPrompt.create(7, bb, "normal", seed=3)
    soft.save(tmp_path / "soft.safetensors")
    back = SoftPrompt.load(tmp_path / "soft.safetensors")
    assert torch.equal(back.weight, soft.weight) and back.init == "vocab" and back.n_soft == 7
    assert normal.init == "normal" and not torch.equal(normal.weight, soft.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["soft.safetensors"]  # no temp file left behind
    with pytest.raises(DelrecError):
        SoftPrompt.load(tmp_path / "missing.safetensors")
    with pytest.raises(DelrecError, match="width"):
        CandidateScorer(backbones["llama"]).score(PROMPTS, CANDS, SoftPrompt(3, bb.embed_dim + 1))


@pytest.mark.parametrize("domain", list(T.DOMAINS))
@pytest.mark.parametrize("letters", [False, True])
def test_templates_hold_the_marker_once(domain, letters):
    c = CANDS[0]
    prompts = {"ta": T.render_ta(domain, "SASRec", HIST[:4], HIST[3:7], c[1], c, letters),
               "rps": T.render_rps(domain, "SASRec", HIST, c[1:3], c, letters),
               "lsr": T.render_lsr(domain, "SASRec", HIST, c, letters, hint=c[:2])}
    for p in prompts.values():
        assert p.count(T.SOFT) == 1 and p.startswith(p.lstrip()) and p == p.rstrip()
        assert "The recommendation pattern of the SASRec model is: [SOFT]." in p
        assert T.DOMAINS[domain].past in p and ", ".join(HIST[:2]) in p
        assert ("A. " + c[0] in p) == letters and p.endswith("candidate") == letters
        assert T.SOFT not in T.mark_soft(p, 100) and "<soft prompt x100>" in T.mark_soft(p, 100)
    bare = T.render_lsr(domain, "SASRec", HIST, c, letters, soft=False)
    assert T.SOFT not in bare and "recommendation pattern" not in bare
    assert "best first: " + ", ".join(c[:2]) in prompts["lsr"]


def test_template_errors():
    with pytest.raises(DelrecError, match="domain"):
        T.render_lsr("books", "SASRec", HIST, CANDS[0], False)
    with pytest.raises(DelrecError, match="marker"):
        T.render_lsr("movie", "SASRec", ["Evil " + T.SOFT], CANDS[0], False)


def test_fp16_t5_is_refused():
    with pytest.raises(DelrecError, match="fp16"):
        load_backbone(LMConfig(backbone="tiny-random-t5", dtype="fp16", device="cpu"))


def test_missing_backbones_fail_with_one_line(tmp_path):
    for name in (str(tmp_path / "no-such-model"), "./models/none", "tiny-random-bert"):
        with pytest.raises(DelrecError) as err:
            load_backbone(LMConfig(backbone=name, device="cpu"))
        assert "\n" not in str(err.value) and str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DelrecError, match="config.json"):
        load_backbone(LMConfig(backbone=str(tmp_path / "empty"), device="cpu"))


def test_attention_target_modules(backbones):
    assert attention_target_modules(backbones["t5"].model) == ["q", "v"]
    assert attention_target_modules(backbones["llama"].model) == ["q_proj", "v_proj"]
    assert attention_target_modules(backbones["gpt2"].model) == ["c_attn"]

    class Odd(torch.nn.Module):
        config = type("Cfg", (), {"model_type": "odd"})()

    with pytest.raises(DelrecError, match="odd"):
        attention_target_modules(Odd())


def test_tiny_backbones_are_deterministic_and_cover_the_demo_words(backbones):
    again = tiny_backbone("llama")
    assert all(torch.equal(a, b) for a, b in zip(again.model.parameters(), backbones["llama"].model.parameters()))
    assert backbones["llama"].model.training is False
    tok = tiny_tokenizer("t5", vocab_texts=["Zyzzyva Quux"])
    assert tok.get_vocab() == tiny_tokenizer("t5", vocab_texts=["Zyzzyva Quux"]).get_vocab()
    for kind in KINDS:
        tk = backbones[kind].tokenizer
        ids = tk("Star Quest 3, Dragon Saga 1 (1994): Ünïcödé ☃", add_special_tokens=False)["input_ids"]
        assert tk.unk_token_id not in ids and len(ids) < 30  # byte-level: nothing unknown, words merged


@pytest.mark.slow
def test_smollm2_prefers_a_fitting_candidate(smollm2):
    bb = smollm2
    hist = ["Toy Story (1995)", "Aladdin (1992)", "The Lion King (1994)", "Beauty and the Beast (1991)"]
    fit, odd = "Pocahontas (1995)", "Scream (1996)"
    scorer = CandidateScorer(bb)
    margins = []
    for cands in ([fit, odd], [odd, fit]):  # both orders: no position bias can decide it
        with torch.no_grad():
            s = scorer.score([T.render_lsr("movie", "SASRec", hist, cands, False, soft=False)], [cands])[0]
        margins.append(float(s[cands.index(fit)] - s[cands.index(odd)]))
    assert min(margins) > 0, margins


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_packed_pass_trains_adalora_adapters_like_the_cached_pass(kind):
    from delrec.config import Stage2Config
    from delrec.lm.adapters import add_adalora, trainable_params

    bb = tiny_backbone(kind)
    model = add_adalora(bb, Stage2Config(steps=10, init_r=4, target_r=2, lora_dropout=0.0, warmup=0,
                                         eval_every=10))
    params = trainable_params(model)
    with torch.no_grad():  # AdaLoRA starts as the identity (E = 0); give the adapters an effect to compare
        for name, p in params.items():
            if "lora_E" in name:
                p.normal_(0, 0.5)
    labels = torch.tensor([1, 0, 4])
    grads = {}
    for candidate_pass in ("cached", "packed"):
        model.zero_grad()
        scores = CandidateScorer(bb, candidate_pass=candidate_pass).score(PROMPTS, CANDS, None)
        torch.nn.functional.cross_entropy(scores, labels).backward()
        grads[candidate_pass] = (scores.detach(), {n: p.grad.clone() for n, p in params.items() if p.grad is not None})
    (s_cached, g_cached), (s_packed, g_packed) = grads["cached"], grads["packed"]
    assert torch.allclose(s_packed, s_cached, atol=1e-4)
    assert g_packed.keys() == g_cached.keys() and any(g.abs().sum() > 0 for g in g_packed.values())
    for name, g in g_packed.items():
        assert torch.allclose(g, g_cached[name], atol=1e-5, rtol=1e-3), name
