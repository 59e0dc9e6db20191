"""Prompt templates (TA, RPS, LSR) and the examples built from them."""
