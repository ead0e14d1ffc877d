"""Toxicity service: scores texts (profanity model + sentence-embedding head), batched."""
