"""PiiEngine with a fake analyzer: exclusion, overlaps, rewriting, validation (no model)."""

import random
import re

import pytest
from faker import Faker

from pii.engine import PiiEngine, keep
from pii.replace import Method
from pii.spans import InvalidInput, Span


class FakeAnalyzer:
    """Finds 'Ann Lee' as PERSON and anything like an email, plus a weaker overlapping PHONE."""

    entities = frozenset({"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER"})

    def __init__(self):
        self.batches: list[int] = []

    def analyze_batch(self, texts):
        self.batches.append(len(texts))
        out = []
        for text in texts:
            spans = [Span("PERSON", m.start(), m.end(), 0.85) for m in re.finditer("Ann Lee", text)]
            spans += [Span("EMAIL_ADDRESS", m.start(), m.end(), 1.0) for m in re.finditer(r"\S+@\S+\.com", text)]
            spans += [Span("PHONE_NUMBER", m.start(), m.end(), 0.4) for m in re.finditer(r"\d{3}-\d{4}", text)]
            spans += [Span("PHONE_NUMBER", m.start(), m.end(), 0.3) for m in re.finditer(r"\S+@", text)]
            out.append(spans)
        return out


@pytest.fixture
def engine():
    e = PiiEngine(FakeAnalyzer(), max_texts=4, max_text_chars=200, faker=Faker(), rng=random.Random(0))
    yield e
    e.close()


async def test_analyze_resolves_overlaps_and_orders(engine):
    [spans] = await engine.analyze(["mail ann@x.com, Ann Lee, 555-1234"])
    assert [s.type for s in spans] == ["EMAIL_ADDRESS", "PERSON", "PHONE_NUMBER"]


async def test_excluded_entities(engine):
    [spans] = await engine.analyze(["Ann Lee ann@x.com"], excluded=["email_address"])
    # the weaker PHONE finding inside the excluded email does not take its place
    assert [s.type for s in spans] == ["PERSON"]


async def test_excluding_a_known_but_undetected_type_is_fine(engine):
    await engine.analyze(["x"], excluded=["LOCATION"])


async def test_unknown_type_and_bounds_are_invalid(engine):
    with pytest.raises(InvalidInput):
        await engine.analyze(["x"], excluded=["SHOE_SIZE"])
    with pytest.raises(InvalidInput):
        await engine.analyze(["x"] * 5)
    with pytest.raises(InvalidInput):
        await engine.analyze(["x" * 201])


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        (Method.CATEGORY, "Hi <PERSON>, write to <EMAIL_ADDRESS>."),
        (Method.MASK, "Hi *******, write to *********."),
    ],
)
async def test_anonymize_methods(engine, method, expected):
    [out], [spans] = await engine.anonymize(["Hi Ann Lee, write to ann@x.com."], method)
    assert out == expected
    assert [s.type for s in spans] == ["PERSON", "EMAIL_ADDRESS"]


async def test_anonymize_fake_is_consistent_within_a_request(engine):
    texts = ["Ann Lee called. Ann Lee again.", "Later, Ann Lee left."]
    out, _ = await engine.anonymize(texts, Method.FAKE)
    first = out[0].split(" called")[0]
    assert first != "Ann Lee" and out[0] == f"{first} called. {first} again." and out[1] == f"Later, {first} left."


async def test_anonymize_random_keeps_layout(engine):
    [out], _ = await engine.anonymize(["Hi Ann Lee!"], Method.RANDOM)
    assert re.fullmatch(r"Hi [A-Z][a-z]{2} [A-Z][a-z]{2}!", out) and out != "Hi Ann Lee!"


async def test_text_without_pii_is_unchanged(engine):
    out, found = await engine.anonymize(["What is the capital of France?"], Method.FAKE)
    assert out == ["What is the capital of France?"] and found == [[]]


@pytest.mark.parametrize(
    ("span", "text", "kept"),
    [
        (Span("PERSON", 0, 4, 0.85), "JSON parser", False),
        (Span("PERSON", 0, 8, 0.85), "my_var = 1", False),
        (Span("PERSON", 0, 5, 0.85), "hello there", False),
        (Span("PERSON", 0, 8, 0.85), "Ann Lee!", True),
        (Span("PERSON", 0, 15, 0.85), "Margaret Forest", False),
        (Span("PERSON", 0, 18, 0.85), "Lauren Falls Suite", False),
        (Span("PERSON", 0, 14, 0.85), "Forest Whitaker", True),
        (Span("PERSON", 0, 15, 0.85), "Mark Path\nMuel", False),
        (Span("PHONE_NUMBER", 0, 11, 0.4), "536-22-8726", False),
        (Span("PHONE_NUMBER", 0, 12, 0.4), "212-555-0123", True),
        (Span("PHONE_NUMBER", 0, 15, 0.4), "+1 212 555 0123", True),
        (Span("PHONE_NUMBER", 0, 10, 0.4), "2125550123", False),  # bare digits, no phone word
        (Span("PHONE_NUMBER", 0, 10, 0.75), "2125550123", True),  # ... with one
        (Span("PHONE_NUMBER", 0, 15, 0.4), "4 8 15 16 23 42", False),
        (Span("PHONE_NUMBER", 0, 12, 0.4), "2023-0045-17", False),
        (Span("IP_ADDRESS", 0, 9, 0.6), "127.0.0.1", False),
        (Span("IP_ADDRESS", 0, 3, 0.6), "::1", False),
        (Span("IP_ADDRESS", 0, 12, 0.6), "203.0.113.42", True),
    ],
)
def test_false_positive_filter(span, text, kept):
    assert keep(span, text) is kept
