"""Factuality scoring: how well a text is supported by a reference, in [0, 1].

Per sentence of the text:
1. semantic support: its best cosine similarity (all-MiniLM-L6-v2) against each reference
   sentence, each clause of one and the whole reference, mapped linearly from
   [sim_floor, sim_full] onto [0, 1];
2. fact consistency: every number (value + unit; years included) and capitalised name in the
   sentence must also occur in the reference; each one that does not multiplies the sentence's
   score by `fact_penalty`;
3. negation: if exactly one of the sentence and its best-matching reference sentence is negated
   ("not", "never", "n't", ...), the score is multiplied by `negation_penalty`.
The text scores `min_weight * min + (1 - min_weight) * mean` over its sentences, so one
unsupported sentence pulls the score down without a single weak filler sentence deciding it.

This is NOT entailment: see services/factuality/README.md for what it misses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from factuality.facts import ReferenceFacts, extract

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")
_CLAUSE_BREAK = re.compile(r"[,;:]\s+|\s+(?:and|but|while|whose|which|who)\s+")
_NEGATION = re.compile(r"\b(not|no|never|none|nobody|nothing|neither|nor|cannot|without)\b|n't\b", re.IGNORECASE)


class InvalidInput(ValueError):
    """The request cannot be scored as sent (too many pairs, a text too long)."""


@dataclass(frozen=True)
class Pair:
    reference: str
    text: str


class FactualityScorer(Protocol):
    def score(self, pairs: list[Pair]) -> list[float]:
        """Support in [0, 1] per pair, same order; higher is better supported."""
        ...


@dataclass(frozen=True)
class ScoringParams:
    sim_floor: float = 0.4
    sim_full: float = 0.8
    fact_penalty: float = 0.3
    negation_penalty: float = 0.5
    min_weight: float = 0.5


def check_pairs(pairs: list[Pair], *, max_pairs: int, max_chars: int) -> None:
    """Raises InvalidInput unless 1..max_pairs pairs, each side non-empty and short enough."""
    if not pairs:
        raise InvalidInput("pairs must not be empty")
    if len(pairs) > max_pairs:
        raise InvalidInput(f"too many pairs: {len(pairs)} > {max_pairs}")
    for i, p in enumerate(pairs):
        for name, value in (("reference", p.reference), ("text", p.text)):
            if not value.strip():
                raise InvalidInput(f"pairs[{i}].{name} must not be empty")
            if len(value) > max_chars:
                raise InvalidInput(f"pairs[{i}].{name} is too long: {len(value)} > {max_chars} characters")


def split_sentences(text: str) -> list[str]:
    """Sentences (split after . ! ? before a capital or digit, and at line breaks); never empty for
    non-blank text. Abbreviations like "Dr. Smith" are split too (a little lost recall)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def split_clauses(sentence: str) -> list[str]:
    """Clauses of a reference sentence (at , ; : and "and"/"but"/"while"/"whose"/"which"), when it
    has more than one: a short claim matches the clause stating it better than the sentence."""
    parts = [p.strip() for p in _CLAUSE_BREAK.split(sentence) if p and len(p.strip().split()) >= 3]
    return parts if len(parts) > 1 else []


def is_negated(sentence: str) -> bool:
    return _NEGATION.search(sentence) is not None


def semantic_support(similarity: float, params: ScoringParams) -> float:
    span = params.sim_full - params.sim_floor
    return float(np.clip((similarity - params.sim_floor) / span, 0.0, 1.0))


def sentence_score(
    sentence: str,
    best_similarity: float,
    best_reference_sentence: str,
    reference: ReferenceFacts,
    params: ScoringParams,
) -> float:
    score = semantic_support(best_similarity, params)
    score *= params.fact_penalty ** len(reference.unsupported(extract(sentence)))
    if is_negated(sentence) != is_negated(best_reference_sentence):
        score *= params.negation_penalty
    return score


def combine(sentence_scores: list[float], params: ScoringParams) -> float:
    if not sentence_scores:
        return 0.0
    s = np.asarray(sentence_scores, dtype=np.float64)
    return float(np.clip(params.min_weight * s.min() + (1 - params.min_weight) * s.mean(), 0.0, 1.0))


class EmbeddingScorer:
    """The production scorer: one batched embedding call per batch of pairs, then numpy."""

    def __init__(self, embedder, params: ScoringParams | None = None):
        self._embedder = embedder
        self._params = params or ScoringParams()

    @classmethod
    def load(cls, *, device: str = "cpu", threads: int = 2, params: ScoringParams | None = None):
        from common.embedding import MiniLMEmbedder

        return cls(MiniLMEmbedder(device=device, threads=threads), params)

    def score(self, pairs: list[Pair]) -> list[float]:
        split = []
        for p in pairs:
            ref_sents = split_sentences(p.reference)
            clauses = [c for s in ref_sents for c in split_clauses(s)]
            split.append(([*ref_sents, *clauses], split_sentences(p.text)))
        # Embed every distinct string once: n choices share one reference (the prompt).
        unique: dict[str, int] = {}
        for pair, (ref_sents, text_sents) in zip(pairs, split, strict=True):
            for s in (pair.reference, *ref_sents, *text_sents):
                unique.setdefault(s, len(unique))
        vectors = self._embedder.embed(list(unique))
        scores = []
        for pair, (ref_sents, text_sents) in zip(pairs, split, strict=True):
            ref_texts = [*ref_sents, pair.reference]
            ref = vectors[[unique[s] for s in ref_texts]]
            txt = vectors[[unique[s] for s in text_sents]]
            sims = txt @ ref.T  # [text sentences, reference sentences + whole reference]
            facts = ReferenceFacts.of(pair.reference)
            per_sentence = []
            for i, sentence in enumerate(text_sents):
                best = int(np.argmax(sims[i, :-1])) if len(ref_sents) else 0
                per_sentence.append(
                    sentence_score(
                        sentence,
                        float(sims[i].max()),
                        ref_sents[best] if ref_sents else pair.reference,
                        facts,
                        self._params,
                    )
                )
            scores.append(combine(per_sentence, self._params))
        return scores
