"""Model-free tests of the factuality score: sentence splitting, mapping, penalties, combination."""

import numpy as np
import pytest

from factuality.facts import ReferenceFacts
from factuality.scorer import (
    EmbeddingScorer,
    InvalidInput,
    Pair,
    ScoringParams,
    check_pairs,
    combine,
    is_negated,
    semantic_support,
    sentence_score,
    split_clauses,
    split_sentences,
)

P = ScoringParams()


def test_split_sentences():
    assert split_sentences("It was built in 1889. It is tall! Is it? Yes.\nNew line") == [
        "It was built in 1889.",
        "It is tall!",
        "Is it?",
        "Yes.",
        "New line",
    ]
    assert split_sentences("Python 3.0 was released. 2008 was the year.") == [
        "Python 3.0 was released.",
        "2008 was the year.",
    ]
    assert split_sentences("  ") == []


def test_split_clauses_only_when_there_are_several():
    assert split_clauses("She was born in Warsaw in 1867 and died in 1934.") == [
        "She was born in Warsaw in 1867",
        "died in 1934.",
    ]
    assert split_clauses("A short sentence.") == []


@pytest.mark.parametrize(
    ("sentence", "negated"),
    [
        ("It is not tall.", True),
        ("It isn't tall.", True),
        ("It never rains.", True),
        ("It is tall.", False),
        ("Notably tall.", False),
    ],
)
def test_is_negated(sentence, negated):
    assert is_negated(sentence) is negated


def test_semantic_support_maps_the_similarity_band_onto_0_1():
    assert semantic_support(P.sim_floor - 0.1, P) == 0.0
    assert semantic_support(P.sim_full + 0.1, P) == 1.0
    assert semantic_support((P.sim_floor + P.sim_full) / 2, P) == pytest.approx(0.5)


def test_sentence_score_penalties():
    ref = ReferenceFacts.of("The tower was completed in 1889 in Paris.")
    ref_sentence = "The tower was completed in 1889 in Paris."
    assert sentence_score("It was completed in 1889.", 0.95, ref_sentence, ref, P) == 1.0
    assert sentence_score("It was completed in 1887.", 0.95, ref_sentence, ref, P) == pytest.approx(P.fact_penalty)
    assert sentence_score("It was completed in 1887 in Rome.", 0.95, ref_sentence, ref, P) == pytest.approx(
        P.fact_penalty**2
    )
    assert sentence_score("It was not completed in 1889.", 0.95, ref_sentence, ref, P) == pytest.approx(
        P.negation_penalty
    )


def test_combine_weighs_the_worst_sentence():
    assert combine([], P) == 0.0
    assert combine([1.0, 1.0], P) == 1.0
    assert combine([1.0, 0.0], P) == pytest.approx(0.5 * 0.0 + 0.5 * 0.5)


def test_check_pairs():
    check_pairs([Pair("r", "t")], max_pairs=1, max_chars=5)
    for pairs, match in [
        ([], "empty"),
        ([Pair("r", "t")] * 2, "too many"),
        ([Pair("r", " ")], r"pairs\[0\].text must not be empty"),
        ([Pair("r" * 6, "t")], r"pairs\[0\].reference is too long"),
    ]:
        with pytest.raises(InvalidInput, match=match):
            check_pairs(pairs, max_pairs=1, max_chars=5)


class BagOfWordsEmbedder:
    """A stand-in with the real interface: normalised bag-of-words over a tiny vocabulary."""

    VOCAB = ["tower", "paris", "completed", "tall", "cheese", "moon"]

    def __init__(self):
        self.calls = 0

    def embed(self, texts):
        self.calls += 1
        v = np.array([[t.lower().count(w) for w in self.VOCAB] for t in texts], dtype=np.float32) + 1e-6
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_embedding_scorer_with_a_fake_embedder():
    embedder = BagOfWordsEmbedder()
    scorer = EmbeddingScorer(embedder)
    ref = "The tower in Paris was completed in 1889. The tower is tall."
    scores = scorer.score(
        [
            Pair(ref, "The tower in Paris was completed in 1889."),
            Pair(ref, "The tower in Paris was completed in 1887."),
            Pair(ref, "Cheese on the moon."),
        ]
    )
    assert scores[0] > 0.9
    assert scores[1] < 0.5
    assert scores[2] < 0.1
    assert embedder.calls == 1  # one batched embedding call for all pairs
