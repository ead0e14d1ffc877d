"""Model-free tests of number / name extraction and of the reference support checks."""

import pytest

from factuality.facts import Name, Number, ReferenceFacts, extract, extract_names, extract_numbers


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("completed in 1889", [Number(1889, None)]),
        ("it is 330 metres tall", [Number(330, "metre")]),
        ("8,849 m high", [Number(8849, "metre")]),
        ("revenue of 12.4 million dollars", [Number(12_400_000, "dollar")]),
        ("costs $5", [Number(5, "dollar")]),
        ("up 8% and then 8 percent", [Number(8, "percent"), Number(8, "percent")]),
        ("two hydrogen atoms", [Number(2, None)]),
        ("three days per week", [Number(3, "day")]),
        ("Python 3.0 in December 2008", [Number(3.0, None), Number(2008, None)]),
        ("no numbers here", []),
        ("version v2 of x86", []),  # digits inside words are not numbers
    ],
)
def test_extract_numbers(text, numbers):
    assert extract_numbers(text) == numbers


@pytest.mark.parametrize(
    ("sentence", "names"),
    [
        ("The Eiffel Tower is in Paris.", [("eiffel", "tower"), ("paris",)]),
        ("Gustave Eiffel designed it.", [("gustave", "eiffel")]),
        ("Paris is big.", []),  # a lone capital opening the sentence is not a name
        ("It flows through Peru, Colombia and Brazil.", [("peru",), ("colombia",), ("brazil",)]),
        ("I think Marie Curie's work mattered.", [("marie", "curie")]),
        ("It landed on July 20, 1969.", [("july",)]),
        ("nothing capitalised here", []),
    ],
)
def test_extract_names(sentence, names):
    assert extract_names(sentence) == [Name(n) for n in names]


REFERENCE = (
    "The Eiffel Tower in Paris was completed in 1889. It is 330 metres tall. "
    "It was designed by the company of Gustave Eiffel and cost 7.8 million francs."
)


@pytest.mark.parametrize(
    ("sentence", "unsupported"),
    [
        ("The Eiffel Tower was completed in 1889.", 0),
        ("The Eiffel Tower was completed in 1887.", 1),
        ("It is 330 metres tall.", 0),
        ("It is 330 m tall.", 0),  # unit spelling is normalised
        ("It is 330 feet tall.", 1),  # same value, other unit
        ("It is 300 metres tall.", 1),
        ("The tower in Paris cost 7,800,000 francs.", 0),  # 7.8 million == 7,800,000
        ("The tower stands in Lyon.", 1),
        ("It was designed by Gustave Eiffel.", 0),
        ("It was designed by Gustave Flaubert.", 1),
        ("It was designed by Eiffel and built by Napoleon Bonaparte in 1850.", 2),
    ],
)
def test_reference_support(sentence, unsupported):
    assert len(ReferenceFacts.of(REFERENCE).unsupported(extract(sentence))) == unsupported
