#!/usr/bin/env bash
# GPU smoke check (< 5 minutes): the demo preset end to end on CUDA, then one stage-2 step of a random
# flan-t5-base-shaped T5 in bf16 with throughput. Usage: bash scripts/gpu_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-/tmp/delrec-gpu-check}}"
export DEVICE="${DEVICE:-cuda}"   # DEVICE=cpu dry-runs the same script without a GPU
mkdir -p "$OUT"
python - <<'PY'
import os, torch
if os.environ["DEVICE"] == "cuda":
    assert torch.cuda.is_available(), "no CUDA device visible"
    print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
export PYTHONPATH="src:${PYTHONPATH:-}"
start=$(date +%s)
python -m delrec.cli run --config configs/demo.yaml --out "$OUT/demo" --set lm.device=$DEVICE --set teacher.device=$DEVICE
echo "demo preset: $(( $(date +%s) - start )) s"
python - "$OUT" <<'PY'
import json, os, sys, time
import torch
import torch.nn.functional as F
from transformers import T5Config, T5ForConditionalGeneration
from delrec.config import Stage2Config
from delrec.lm.backbone import Backbone
from delrec.lm.tiny import tiny_tokenizer
from delrec.lm.scoring import CandidateScorer
from delrec.lm.soft_prompt import SoftPrompt
from delrec.lm.adapters import add_adalora, orthogonal_regulariser

dev = os.environ["DEVICE"]
sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
tok = tiny_tokenizer("t5")
cfg = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12,
               feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0)
model = T5ForConditionalGeneration(cfg).to(dev, torch.bfloat16).eval().requires_grad_(False)
bb = Backbone(model, tok, True, "random-flan-t5-base")
scorer = CandidateScorer(bb, "title-likelihood")
soft = SoftPrompt.create(100, bb, seed=0).to(dev, torch.bfloat16)
add_adalora(bb, Stage2Config(steps=10, init_r=32, target_r=16, warmup=0, eval_every=10))
hist = ", ".join(f"Movie Title Number {i} (199{i % 10})" for i in range(10))
cands = [f"Candidate Film {j} Part {j % 4}" for j in range(20)]
prompt = f"The recommendation pattern of the SASRec model is: [SOFT]. The user watched {hist}. Next is"
opt = torch.optim.AdamW([p for p in bb.model.parameters() if p.requires_grad], lr=1e-4)
for i in range(3):  # the first step includes CUDA warm-up
    sync(); t = time.time()
    scores = scorer.score([prompt] * 8, [cands] * 8, soft)
    loss = F.cross_entropy(scores.float(), torch.zeros(8, dtype=torch.long, device=dev))
    (loss + 0.5 * orthogonal_regulariser(bb.model)).backward()
    opt.step(); bb.model.base_model.update_and_allocate(i); opt.zero_grad()
    sync(); dt = time.time() - t
print(json.dumps({"t5_base_bf16_stage2_step_s": round(dt, 3), "examples_per_s": round(8 / dt, 1),
                  "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev == "cuda" else None, "loss": float(loss)}))
PY
cat "$OUT/demo/results.md"
echo "total: $(( $(date +%s) - start )) s"
