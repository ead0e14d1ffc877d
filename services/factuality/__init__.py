"""Factuality service: how well texts are supported by references (embeddings + facts)."""
