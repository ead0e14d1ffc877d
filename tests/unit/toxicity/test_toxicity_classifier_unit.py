"""Model-free tests of the toxicity classifier's plumbing (chunking, features, head, folding)."""

import json

import numpy as np
import pytest

from toxicity.classifier import (
    PROFANITY_LOGIT_SCALE,
    CombinedClassifier,
    Head,
    InvalidInput,
    check_texts,
    chunk_text,
    features,
    max_per_text,
    profanity_logit,
)


@pytest.mark.parametrize(
    ("text", "max_chars", "chunks"),
    [
        ("", 200, []),
        ("   \n ", 200, []),
        ("One sentence.", 200, ["One sentence."]),
        ("First. Second! Third?", 200, ["First. Second! Third?"]),
        ("First one. Second one.", 12, ["First one.", "Second one."]),
        ("line one\nline two", 8, ["line one", "line two"]),
        ("word " * 10, 10, ["word word", "word word", "word word", "word word", "word word"]),
    ],
)
def test_chunk_text(text, max_chars, chunks):
    assert chunk_text(text, max_chars) == chunks


def test_chunks_never_exceed_the_limit_and_keep_every_word():
    text = "A fairly long sentence that goes on. " * 20 + "x" * 450
    chunks = chunk_text(text, 100)
    assert all(len(c) <= 100 for c in chunks)
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")


def test_check_texts_bounds():
    check_texts(["a", "b"], max_texts=2, max_chars=1)
    with pytest.raises(InvalidInput, match="empty"):
        check_texts([], max_texts=2, max_chars=10)
    with pytest.raises(InvalidInput, match="too many"):
        check_texts(["a"] * 3, max_texts=2, max_chars=10)
    with pytest.raises(InvalidInput, match=r"texts\[1\] is too long"):
        check_texts(["ok", "x" * 11], max_texts=2, max_chars=10)


def test_features_append_scaled_profanity_log_odds():
    emb = np.eye(2, 3)
    x = features(emb, np.array([0.5, 0.9]))
    assert x.shape == (2, 4)
    assert x[0, 3] == pytest.approx(0.0)
    assert x[1, 3] == pytest.approx(np.log(9) / PROFANITY_LOGIT_SCALE)
    assert np.isfinite(profanity_logit(np.array([0.0, 1.0]))).all()  # clipped, never infinite


def test_head_round_trips_through_json(tmp_path):
    head = Head(weights=np.array([1.0, -2.0]), bias=0.5)
    (tmp_path / "head.json").write_text(json.dumps(head.to_json()))
    loaded = Head.load(tmp_path)
    x = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert loaded.predict(x) == pytest.approx(1 / (1 + np.exp(-np.array([0.5, -0.5]))))


def test_head_load_fails_fast(tmp_path):
    with pytest.raises(FileNotFoundError, match="toxicity.train"):
        Head.load(tmp_path)
    (tmp_path / "head.json").write_text(json.dumps({"weights": [1.0], "bias": 0.0, "profanity_logit_scale": 1.0}))
    with pytest.raises(ValueError, match="feature scale"):
        Head.load(tmp_path)


def test_max_per_text():
    assert max_per_text([0.1, 0.9, 0.2, 0.3], [2, 0, 2]) == [0.9, 0.0, 0.3]


class FakeProfanity:
    def predict_proba(self, texts):
        return np.array([0.99 if "badword" in t else 0.01 for t in texts])


class FakeEmbedder:
    def __init__(self):
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        return np.array([[1.0, 0.0] if "threat" in t else [0.0, 1.0] for t in texts])


def test_combined_classifier_scores_each_text_as_its_worst_chunk_and_dedupes():
    embedder = FakeEmbedder()
    # toxic when the embedding says "threat" (dim 0) or the profanity log-odds are high (dim 2)
    head = Head(weights=np.array([30.0, -5.0, 20.0]), bias=0.0)
    clf = CombinedClassifier(FakeProfanity(), embedder, head, chunk_chars=20)
    long_text = "Nice weather today. Such a calm day. a threat here."
    scores = clf.score(["hello there", "badword!", long_text, "hello there", ""])
    assert scores[0] < 0.01 and scores[3] == scores[0]
    assert scores[1] > 0.99
    assert scores[2] > 0.99  # one toxic sentence is not averaged away
    assert scores[4] == 0.0
    assert embedder.calls[0].count("hello there") == 1
    assert all(0.0 <= s <= 1.0 for s in scores)
