"""Toxicity scoring: a shipped profanity model and a sentence-embedding head, combined.

Two real signals:
- `alt-profanity-check` (PyPI, weights in the package): a linear SVM over TF-IDF word n-grams
  trained on toxic-comment data. Strong on swearing, blind to meaning: "I will find you and
  hurt you" scores low and "damn good" scores high.
- all-MiniLM-L6-v2 sentence embeddings (see embedder.py), which capture threats, harassment and
  identity attacks phrased without a single bad word.

One logistic-regression head (trained by `train.py`, weights in `<model_dir>/head.json`) reads
both: the embedding and the profanity model's log-odds, and gives one probability in [0, 1].
Long texts are cut into sentence chunks; a text scores as its most toxic chunk, so one toxic
sentence in a long benign answer is not averaged away.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

HEAD_FILE = "head.json"
# The profanity log-odds enter the head divided by this, so they sit on a scale near the
# embedding's components; train.py and the classifier must agree.
PROFANITY_LOGIT_SCALE = 4.0
_PROB_EPS = 1e-4
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class InvalidInput(ValueError):
    """The request cannot be scored as sent (too many texts, a text too long)."""


class ToxicityClassifier(Protocol):
    def score(self, texts: list[str]) -> list[float]:
        """Toxicity in [0, 1] per text, same order; higher is more toxic."""
        ...


def check_texts(texts: list[str], *, max_texts: int, max_chars: int) -> None:
    """Raises InvalidInput unless 1..max_texts texts of at most max_chars characters each."""
    if not texts:
        raise InvalidInput("texts must not be empty")
    if len(texts) > max_texts:
        raise InvalidInput(f"too many texts: {len(texts)} > {max_texts}")
    for i, text in enumerate(texts):
        if len(text) > max_chars:
            raise InvalidInput(f"texts[{i}] is too long: {len(text)} > {max_chars} characters")


def chunk_text(text: str, max_chars: int = 200) -> list[str]:
    """Splits text into consecutive sentence groups of at most ~max_chars characters.

    A sentence longer than max_chars is cut at word boundaries. Whitespace-only text has no chunks.
    """
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + 1 + len(piece) <= max_chars:
            chunks[-1] = f"{chunks[-1]} {piece}"
        else:
            chunks.append(piece)
    return chunks


def profanity_logit(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), _PROB_EPS, 1 - _PROB_EPS)
    return np.log(p / (1 - p))


def features(embeddings: np.ndarray, profanity_probs: np.ndarray) -> np.ndarray:
    """The head's input: [embedding (384), profanity log-odds / PROFANITY_LOGIT_SCALE]."""
    extra = (profanity_logit(profanity_probs) / PROFANITY_LOGIT_SCALE)[:, None]
    return np.concatenate([np.asarray(embeddings, dtype=np.float64), extra], axis=1)


@dataclass(frozen=True)
class Head:
    """A logistic-regression head over `features(...)`."""

    weights: np.ndarray
    bias: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = x @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    @classmethod
    def load(cls, model_dir: Path) -> Head:
        path = model_dir / HEAD_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: build it with `python -m toxicity.train` (make models)")
        data = json.loads(path.read_text())
        weights = np.asarray(data["weights"], dtype=np.float64)
        if data.get("profanity_logit_scale") != PROFANITY_LOGIT_SCALE:
            raise ValueError(f"{path} was trained with another feature scale; rebuild it")
        return cls(weights=weights, bias=float(data["bias"]))

    def to_json(self) -> dict:
        return {
            "weights": [float(w) for w in self.weights],
            "bias": self.bias,
            "profanity_logit_scale": PROFANITY_LOGIT_SCALE,
        }


def max_per_text(chunk_scores: list[float], chunks_per_text: list[int]) -> list[float]:
    """Folds chunk scores back into one score per text (the maximum; 0.0 for a text with none)."""
    out, start = [], 0
    for n in chunks_per_text:
        out.append(max(chunk_scores[start : start + n], default=0.0))
        start += n
    return out


class ProfanityModel:
    """alt-profanity-check's vectorizer and linear model, loaded from the installed package."""

    def __init__(self) -> None:
        import joblib

        data = resources.files("profanity_check") / "data"
        self._vectorizer = joblib.load(data / "vectorizer.joblib")
        self._model = joblib.load(data / "model.joblib")

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self._model.predict_proba(self._vectorizer.transform(texts))[:, 1]


class CombinedClassifier:
    """The production classifier: profanity model + MiniLM embedding, one head."""

    def __init__(self, profanity: ProfanityModel, embedder, head: Head, *, chunk_chars: int = 200):
        self._profanity = profanity
        self._embedder = embedder
        self._head = head
        self._chunk_chars = chunk_chars

    @classmethod
    def load(cls, model_dir: Path, *, device: str = "cpu", threads: int = 2, chunk_chars: int = 200):
        from common.embedding import MiniLMEmbedder

        return cls(
            ProfanityModel(),
            MiniLMEmbedder(device=device, threads=threads),
            Head.load(model_dir),
            chunk_chars=chunk_chars,
        )

    def score_chunks(self, chunks: list[str]) -> np.ndarray:
        if not chunks:
            return np.zeros(0)
        x = features(self._embedder.embed(chunks), self._profanity.predict_proba(chunks))
        return self._head.predict(x)

    def profanity_only(self, texts: list[str]) -> list[float]:
        """The shipped profanity model alone (the baseline in benchmarks), max over chunks."""
        chunked = [chunk_text(t, self._chunk_chars) for t in texts]
        flat = [c for cs in chunked for c in cs]
        scores = self._profanity.predict_proba(flat).tolist() if flat else []
        return max_per_text(scores, [len(cs) for cs in chunked])

    def score(self, texts: list[str]) -> list[float]:
        chunked = [chunk_text(t, self._chunk_chars) for t in texts]
        flat = [c for cs in chunked for c in cs]
        unique = list(dict.fromkeys(flat))  # the same choice text n times is scored once
        by_text = dict(zip(unique, self.score_chunks(unique).tolist(), strict=True))
        scores = max_per_text([by_text[c] for c in flat], [len(cs) for cs in chunked])
        return [min(1.0, max(0.0, s)) if math.isfinite(s) else 1.0 for s in scores]
