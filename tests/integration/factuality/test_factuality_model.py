"""The real factuality scorer (MiniLM int8 embeddings + fact checks) on clear-cut cases."""

import pytest

from factuality.scorer import EmbeddingScorer, Pair

pytestmark = pytest.mark.model

THRESHOLD = 0.5  # the recommended default (see tests/bench/test_factuality_bench.py)
EIFFEL_1889 = "The Eiffel Tower in Paris was completed in 1889 for the World's Fair. It is 330 metres tall."
EIFFEL_1887 = "The Eiffel Tower in Paris was completed in 1887 for the World's Fair. It is 330 metres tall."


@pytest.fixture(scope="module")
def scorer() -> EmbeddingScorer:
    return EmbeddingScorer.load()


def test_same_year_scores_high_and_a_wrong_year_scores_low(scorer):
    text = "The Eiffel Tower was completed in 1889."
    supported, contradicted = scorer.score([Pair(EIFFEL_1889, text), Pair(EIFFEL_1887, text)])
    assert supported > 0.8
    assert contradicted < 0.35


@pytest.mark.parametrize(
    ("text", "supported"),
    [
        ("The tower in Paris is 330 metres tall.", True),
        ("It was finished in 1889, in time for the World's Fair.", True),
        ("The Eiffel Tower is 300 metres tall.", False),
        ("The Eiffel Tower is in Berlin.", False),
        ("Bananas are a good source of potassium.", False),
        ("The Eiffel Tower was completed in 1889. It was designed by Leonardo da Vinci.", False),
    ],
)
def test_clear_cases(scorer, text, supported):
    score = scorer.score([Pair(EIFFEL_1889, text)])[0]
    assert (score >= THRESHOLD) is supported, score


def test_batched_equals_one_at_a_time(scorer):
    pairs = [Pair(EIFFEL_1889, t) for t in ("The Eiffel Tower was completed in 1889.", "It is in Rome.", "Hi.")]
    assert scorer.score(pairs) == pytest.approx([scorer.score([p])[0] for p in pairs], abs=1e-4)
