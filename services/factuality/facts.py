"""Checkable facts in a sentence: numbers (with scale words and units; years are numbers) and names.

Model-free. A fact in the text is "supported" when the reference states it too:
- a number when the reference has the same value (after normalising "1,000", "3.5 million",
  "two"); with a unit, the reference's mention of that value must have no unit or the same one;
- a name (capitalised words: "Gustave Eiffel", "Paris", "July") when every word of it occurs in
  the reference, case-insensitively.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NUMBER_WORDS = {
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "hundred": 100,
    "thousand": 1000,
}
_SCALES = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}
# Spelled-out units -> one canonical name; anything else after a number is not a unit.
_UNITS = {
    "%": "percent",
    "percent": "percent",
    "per cent": "percent",
    "m": "metre",
    "metre": "metre",
    "metres": "metre",
    "meter": "metre",
    "meters": "metre",
    "km": "kilometre",
    "kilometre": "kilometre",
    "kilometres": "kilometre",
    "kilometer": "kilometre",
    "kilometers": "kilometre",
    "mile": "mile",
    "miles": "mile",
    "ft": "foot",
    "foot": "foot",
    "feet": "foot",
    "kg": "kilogram",
    "kilogram": "kilogram",
    "kilograms": "kilogram",
    "g": "gram",
    "grams": "gram",
    "lb": "pound",
    "lbs": "pound",
    "pounds": "pound",
    "dollar": "dollar",
    "dollars": "dollar",
    "usd": "dollar",
    "euro": "euro",
    "euros": "euro",
    "cent": "cent",
    "cents": "cent",
    "degree": "degree",
    "degrees": "degree",
    "°c": "degree",
    "°f": "degree_f",
    "year": "year",
    "years": "year",
    "month": "month",
    "months": "month",
    "week": "week",
    "weeks": "week",
    "day": "day",
    "days": "day",
    "hour": "hour",
    "hours": "hour",
    "minute": "minute",
    "minutes": "minute",
    "second": "second",
    "seconds": "second",
}
_NUMBER = re.compile(
    r"(?<![\w.])(?P<cur>[$€£])?(?P<num>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
    r"(?:\s*(?P<scale>thousand|million|billion|trillion)\b)?"
    r"(?:\s*(?P<unit>%|°[cf]|per cent|[a-z]+)\b|(?P<pct>%))?",
    re.IGNORECASE,
)
_WORD_NUMBER = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b(?:\s+(?P<unit>[a-z]+))?", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][\w'’-]*")
# Capitalised words that are not names wherever they stand.
_NOT_NAMES = {"i", "i'm", "i've", "i'd", "i'll", "ok", "okay", "yes", "no", "the", "a", "an"}


@dataclass(frozen=True)
class Number:
    value: float
    unit: str | None


@dataclass(frozen=True)
class Name:
    words: tuple[str, ...]  # lower-case


@dataclass
class Facts:
    numbers: list[Number] = field(default_factory=list)
    names: list[Name] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.numbers) + len(self.names)


def _unit(word: str | None) -> str | None:
    return _UNITS.get(word.lower()) if word else None


def extract_numbers(text: str) -> list[Number]:
    """Numbers in text with their normalised value and canonical unit (None when there is none)."""
    out: list[Number] = []
    for m in _NUMBER.finditer(text):
        value = float(m.group("num").replace(",", "") + ("." + m.group("frac") if m.group("frac") else ""))
        if m.group("scale"):
            value *= _SCALES[m.group("scale").lower()]
        unit = _unit(m.group("unit")) or ("percent" if m.group("pct") else None)
        if m.group("cur"):
            unit = {"$": "dollar", "€": "euro", "£": "pound_sterling"}[m.group("cur")]
        out.append(Number(value, unit))
    for m in _WORD_NUMBER.finditer(text):
        out.append(Number(float(_NUMBER_WORDS[m.group(1).lower()]), _unit(m.group("unit"))))
    return out


def extract_names(sentence: str) -> list[Name]:
    """Runs of capitalised words. A lone capitalised word opening the sentence is skipped
    (every sentence starts with one); a run of two or more there counts ("Gustave Eiffel ...")."""
    names: list[Name] = []
    run: list[str] = []
    run_starts_sentence = False

    def flush() -> None:
        if run and not (run_starts_sentence and len(run) == 1):
            names.append(Name(tuple(w.lower() for w in run)))
        run.clear()

    prev_end = 0
    for i, m in enumerate(_WORD.finditer(sentence)):
        word = re.sub(r"['’]s$", "", m.group())
        gap, prev_end = sentence[prev_end : m.start()], m.end()
        if word[:1].isupper() and word.lower() not in _NOT_NAMES:
            if run and gap.strip():  # punctuation between two words breaks a name
                flush()
            if not run:
                run_starts_sentence = i == 0
            run.append(word)
        else:
            flush()
    flush()
    return names


def extract(sentence: str) -> Facts:
    return Facts(numbers=extract_numbers(sentence), names=extract_names(sentence))


@dataclass(frozen=True)
class ReferenceFacts:
    """What a reference states, indexed for support checks."""

    units_by_value: dict[float, set[str | None]]
    words: frozenset[str]

    @classmethod
    def of(cls, reference: str) -> ReferenceFacts:
        units: dict[float, set[str | None]] = {}
        for n in extract_numbers(reference):
            units.setdefault(n.value, set()).add(n.unit)
        words = frozenset(re.sub(r"['’]s$", "", w).lower() for w in _WORD.findall(reference))
        return cls(units_by_value=units, words=words)

    def supports_number(self, n: Number) -> bool:
        units = self.units_by_value.get(n.value)
        if units is None:
            return False
        return n.unit is None or None in units or n.unit in units

    def supports_name(self, name: Name) -> bool:
        return all(w in self.words for w in name.words)

    def unsupported(self, facts: Facts) -> list[Number | Name]:
        return [n for n in facts.numbers if not self.supports_number(n)] + [
            n for n in facts.names if not self.supports_name(n)
        ]
