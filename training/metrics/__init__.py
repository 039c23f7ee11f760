"""Metrics: text similarity (BLEU, METEOR, ROUGE-L, CIDEr) and clinical correctness."""
