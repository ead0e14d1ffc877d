"""Overlap resolution, entity-name validation and request bounds (no model)."""

import pytest

from pii.spans import InvalidInput, Span, check_texts, normalize_entity_types, resolve_overlaps

S = Span


@pytest.mark.parametrize(
    ("spans", "kept"),
    [
        ([], []),
        ([S("A", 0, 5, 0.5)], [S("A", 0, 5, 0.5)]),
        # disjoint and touching spans all stay, in start order
        ([S("B", 6, 9, 0.4), S("A", 0, 6, 0.9)], [S("A", 0, 6, 0.9), S("B", 6, 9, 0.4)]),
        # overlap: the higher score wins
        ([S("PHONE_NUMBER", 0, 12, 0.4), S("UK_NHS", 0, 12, 0.45)], [S("UK_NHS", 0, 12, 0.45)]),
        # same score: the longer span wins
        ([S("A", 2, 5, 0.85), S("B", 0, 10, 0.85)], [S("B", 0, 10, 0.85)]),
        # a chain: the best in the middle evicts both neighbours
        ([S("A", 0, 4, 0.5), S("B", 3, 8, 0.9), S("C", 7, 12, 0.5)], [S("B", 3, 8, 0.9)]),
        # empty spans are dropped
        ([S("A", 3, 3, 1.0)], []),
    ],
)
def test_resolve_overlaps(spans, kept):
    assert resolve_overlaps(spans) == kept


def test_resolve_overlaps_is_order_independent():
    spans = [S("A", 0, 4, 0.5), S("B", 3, 8, 0.9), S("C", 7, 12, 0.5), S("D", 20, 25, 0.3)]
    assert resolve_overlaps(spans) == resolve_overlaps(reversed(spans))


KNOWN = frozenset({"PERSON", "EMAIL_ADDRESS", "LOCATION"})


def test_entity_names_are_normalised():
    assert normalize_entity_types([" person", "Email_Address", ""], KNOWN) == {
        "PERSON",
        "EMAIL_ADDRESS",
    }


def test_unknown_entity_is_invalid():
    with pytest.raises(InvalidInput, match="NOPE"):
        normalize_entity_types(["PERSON", "nope"], KNOWN)


@pytest.mark.parametrize(
    ("texts", "message"),
    [([], "empty"), (["a"] * 4, "too many"), (["ok", "x" * 11], r"texts\[1\] is too long")],
)
def test_request_bounds(texts, message):
    with pytest.raises(InvalidInput, match=message):
        check_texts(texts, max_texts=3, max_text_chars=10)


def test_request_bounds_ok():
    check_texts(["", "x" * 10], max_texts=3, max_text_chars=10)
