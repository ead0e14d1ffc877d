"""Windowing, padding and aggregation of the injection classifier (no model)."""

import numpy as np
import pytest

from injection.classifier import InjectionClassifier, InvalidInput, max_by_owner, pad_rows, windows

BOS = 100


def test_short_text_is_one_window():
    assert windows([1, 2, 3], bos=BOS, length=8, stride=4) == [[BOS, 1, 2, 3]]
    assert windows([], bos=BOS, length=8, stride=4) == [[BOS]]
    assert windows(list(range(7)), bos=BOS, length=8, stride=4) == [[BOS, *range(7)]]


@pytest.mark.parametrize("n", [8, 9, 15, 30, 101])
@pytest.mark.parametrize("stride", [1, 3, 7, 50])
def test_long_text_windows_cover_everything(n, stride):
    tokens = list(range(n))
    rows = windows(tokens, bos=BOS, length=8, stride=stride)
    assert all(r[0] == BOS and len(r) == 8 for r in rows)
    assert rows[0][1:] == tokens[:7] and rows[-1][1:] == tokens[-7:]
    covered = {t for r in rows for t in r[1:]}
    assert covered == set(tokens)


def test_pad_rows():
    ids, mask = pad_rows([[5, 6], [7]], length=4, pad=0)
    assert ids.dtype == np.int64 and mask.dtype == bool
    assert ids.tolist() == [[5, 6, 0, 0], [7, 0, 0, 0]]
    assert mask.tolist() == [[True, True, False, False], [True, False, False, False]]
    with pytest.raises(ValueError):
        pad_rows([[1] * 5], length=4, pad=0)


def test_max_by_owner():
    assert max_by_owner([0.1, 0.9, 0.3, 0.2], [0, 0, 1, 2], 3) == [0.9, 0.3, 0.2]


class FakeModel:
    def __init__(self):
        self.calls: list[int] = []

    def rows(self, text):
        return [[BOS, len(w)] for w in text.split("|")]  # one window per '|' part

    def score_rows(self, rows):
        self.calls.append(len(rows))
        return [min(1.0, r[1] / 10) for r in rows]


async def test_classifier_aggregates_windows_and_validates():
    model = FakeModel()
    clf = InjectionClassifier(model, max_texts=3, max_text_chars=50)
    try:
        assert await clf.classify(["ab|abcdefgh", "a"]) == [0.8, 0.1]
        with pytest.raises(InvalidInput):
            await clf.classify([])
        with pytest.raises(InvalidInput):
            await clf.classify(["a"] * 4)
        with pytest.raises(InvalidInput):
            await clf.classify(["a" * 51])
    finally:
        clf.close()
