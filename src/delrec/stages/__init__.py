"""Training stages: one loop (loop.py) for stage 1 (distill.py) and stage 2 (finetune.py)."""
