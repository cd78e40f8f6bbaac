"""Evaluation: the model card's WER tables (per language, per latency, language given and auto-detect)
and streaming metrics (time to first token, time to final, partial stability) on NeMo manifests."""
