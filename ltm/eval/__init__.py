"""Evaluation: bounds against K, held-out tables, single-text scores, zero-shot sets, lm-eval.

Every number carries the protocol that produced it (`ltm.inference.bound_results`).
"""
