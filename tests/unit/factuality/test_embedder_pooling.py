"""Model-free test of the pooling that turns MiniLM's token states into sentence vectors."""

import numpy as np

from common.embedding import mean_pool_normalise


def test_mean_pool_ignores_padding_and_normalises():
    hidden = np.array([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    out = mean_pool_normalise(hidden, mask)
    assert np.allclose(out, [[1.0, 0.0]])
    assert np.allclose(np.linalg.norm(mean_pool_normalise(np.random.rand(4, 5, 8), np.ones((4, 5))), axis=1), 1.0)
