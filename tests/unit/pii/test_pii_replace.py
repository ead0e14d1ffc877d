"""Replacement methods (no model; Faker is a plain library)."""

import random
import re

import pytest
from faker import Faker

from pii.replace import FakeReplacer, Method, category, mask, random_like, replacer


@pytest.mark.parametrize("value", ["John Smith", "212-555-0123", "AB 12 cd!", "José", ""])
def test_random_keeps_shape(value):
    out = random_like(value, random.Random(1))
    assert len(out) == len(value)
    for a, b in zip(value, out, strict=True):
        if a.isdigit():
            assert b.isdigit()
        elif a.isalpha():
            assert b.isalpha() and a.isupper() == b.isupper()
        else:
            assert a == b


def test_random_changes_value():
    assert random_like("4111 1111 1111 1111", random.Random(0)) != "4111 1111 1111 1111"


def test_mask_and_category():
    assert mask("john@x.com") == "*" * 10
    assert category("EMAIL_ADDRESS") == "<EMAIL_ADDRESS>"


def test_fake_is_consistent_within_one_replacer():
    fake = FakeReplacer(Faker(), random.Random(0))
    a1 = fake("PERSON", "John Smith")
    b = fake("PERSON", "Mary Jones")
    assert a1 == fake("PERSON", "John Smith")
    assert a1 != b and a1 != "John Smith"


def test_fake_types():
    faker = Faker()
    Faker.seed(3)
    fake = FakeReplacer(faker, random.Random(0))
    assert "@" in fake("EMAIL_ADDRESS", "a@b.com")
    assert re.fullmatch(r"\d{3}-\d{2}-\d{4}", fake("US_SSN", "536-22-8726"))
    assert ":" in fake("IP_ADDRESS", "2001:db8::1")
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", fake("IP_ADDRESS", "10.0.0.1"))
    # no Faker provider: a same-shape value
    out = fake("US_DRIVER_LICENSE", "D1234567")
    assert re.fullmatch(r"[A-Z]\d{7}", out) and out != "D1234567"


def test_replacer_per_method():
    rng = random.Random(0)
    assert replacer(Method.MASK)("PERSON", "Ann") == "***"
    assert replacer(Method.CATEGORY)("PERSON", "Ann") == "<PERSON>"
    assert len(replacer(Method.RANDOM, rng=rng)("PERSON", "Ann")) == 3
    with pytest.raises(ValueError):
        replacer(Method.FAKE)
