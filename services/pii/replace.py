"""Replacement methods for detected spans (pure: no Presidio, no models).

`random` keeps the shape (letters -> random letters of the same case, digits ->
random digits, everything else kept); `fake` draws a realistic value of the same
entity type from Faker, the same original giving the same fake within one request;
`category` writes `<TYPE>`; `mask` writes one `*` per character.
"""

from __future__ import annotations

import enum
import random
import string
from collections.abc import Callable


class Method(enum.Enum):
    RANDOM = "random"
    FAKE = "fake"
    CATEGORY = "category"
    MASK = "mask"


def random_like(value: str, rng: random.Random) -> str:
    """Same shape: letters stay letters (same case), digits stay digits, the rest is kept."""
    out = []
    for ch in value:
        if ch.isdigit():
            out.append(rng.choice(string.digits))
        elif ch.isalpha():
            out.append(rng.choice(string.ascii_uppercase if ch.isupper() else string.ascii_lowercase))
        else:
            out.append(ch)
    return "".join(out)


def mask(value: str) -> str:
    return "*" * len(value)


def category(entity_type: str) -> str:
    return f"<{entity_type}>"


def _ip(faker, value: str) -> str:
    return faker.ipv6() if ":" in value else faker.ipv4_public()


# Faker providers per entity type; identifiers without one get a random value of the same shape.
FAKERS: dict[str, Callable] = {
    "PERSON": lambda f, v: f.name(),
    "EMAIL_ADDRESS": lambda f, v: f.email(),
    "PHONE_NUMBER": lambda f, v: (
        f.numerify("(###) ###-####") if not v.startswith("+") else f.numerify("+1 ###-###-####")
    ),
    "CREDIT_CARD": lambda f, v: f.credit_card_number(),
    "US_SSN": lambda f, v: f.ssn(),
    "US_ITIN": lambda f, v: f.itin(),
    "IBAN_CODE": lambda f, v: f.iban(),
    "IP_ADDRESS": _ip,
    "URL": lambda f, v: f.url(),
}


class FakeReplacer:
    """Per-request fakes: one original (per type) -> one fake; distinct originals differ."""

    def __init__(self, faker, rng: random.Random, attempts: int = 5):
        self._faker = faker
        self._rng = rng
        self._attempts = attempts
        self._given: dict[tuple[str, str], str] = {}
        self._used: set[str] = set()

    def __call__(self, entity_type: str, value: str) -> str:
        key = (entity_type, value)
        if key in self._given:
            return self._given[key]
        make = FAKERS.get(entity_type)
        fake = value
        for _ in range(self._attempts):
            fake = make(self._faker, value) if make else random_like(value, self._rng)
            if fake not in self._used and fake != value:
                break
        if fake == value:  # a generator that cannot move away from the original
            fake = random_like(value, self._rng)
        self._given[key] = fake
        self._used.add(fake)
        return fake


def replacer(method: Method, *, faker=None, rng: random.Random | None = None) -> Callable[[str, str], str]:
    """Returns `f(entity_type, original) -> replacement` for one request."""
    rng = rng or random.SystemRandom()
    if method is Method.RANDOM:
        return lambda t, v: random_like(v, rng)
    if method is Method.MASK:
        return lambda t, v: mask(v)
    if method is Method.CATEGORY:
        return lambda t, v: category(t)
    if faker is None:
        raise ValueError("the fake method needs a Faker")
    return FakeReplacer(faker, rng)
