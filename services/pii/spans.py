"""Detected spans and the pure logic around them: validation of entity names, overlap resolution."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class InvalidInput(ValueError):
    """The caller sent something the service refuses (mapped to INVALID_ARGUMENT)."""


@dataclass(frozen=True, slots=True)
class Span:
    """One detected entity: [start, end) in characters of the analysed text."""

    type: str
    start: int
    end: int
    score: float

    @property
    def length(self) -> int:
        return self.end - self.start


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Keeps a non-overlapping subset, preferring the higher score, then the longer span.

    Greedy over spans ranked (score, length, earliest start); a span is kept when it
    overlaps nothing kept so far. Returned in start order.
    """
    ranked = sorted(spans, key=lambda s: (-s.score, -s.length, s.start, s.type))
    kept: list[Span] = []
    for span in ranked:
        if span.length <= 0:
            continue
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: (s.start, s.end))


def normalize_entity_types(names: Iterable[str], known: frozenset[str]) -> frozenset[str]:
    """Upper-cases and checks entity type names; unknown names are InvalidInput."""
    normalized = {n.strip().upper() for n in names if n.strip()}
    unknown = sorted(normalized - known)
    if unknown:
        raise InvalidInput(f"unknown entity type(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return frozenset(normalized)


def check_texts(texts: list[str], *, max_texts: int, max_text_chars: int) -> None:
    """Request bounds: at least one text, at most `max_texts`, each at most `max_text_chars`."""
    if not texts:
        raise InvalidInput("texts must not be empty")
    if len(texts) > max_texts:
        raise InvalidInput(f"too many texts: {len(texts)} > {max_texts}")
    for i, text in enumerate(texts):
        if len(text) > max_text_chars:
            raise InvalidInput(f"texts[{i}] is too long: {len(text)} > {max_text_chars} characters")
