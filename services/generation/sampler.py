"""Vectorised next-token sampling over a batch whose rows each have their own parameters.

Order of operations per row (OpenAI/vLLM semantics):
  logits - frequency_penalty * count - presence_penalty * (count > 0) + logit_bias
  → greedy argmax when temperature == 0
  → else softmax(logits / temperature) → keep the top_k most likely (0 = all)
  → renormalise → keep the smallest prefix whose mass reaches top_p → sample.

Randomness comes from one counter-based uniform per row per step (splitmix64 of
the row's seed and its step), so a seeded sequence draws the same numbers
whatever batch it shares.
"""

from dataclasses import dataclass

import numpy as np

# Candidates examined before falling back to a full sort of a row's vocabulary.
_CANDIDATES = 256

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def uniforms(seeds: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Returns one float64 in [0, 1) per row: splitmix64(seed + (step + 1) * golden)."""
    with np.errstate(over="ignore"):
        z = seeds.astype(np.uint64) + (steps.astype(np.uint64) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@dataclass
class BatchParams:
    """Per-row sampling parameters, each an array with one entry per row."""

    temperature: np.ndarray  # float, 0 = greedy
    top_k: np.ndarray  # int, 0 = off
    top_p: np.ndarray  # float in (0, 1]
    frequency_penalty: np.ndarray  # float
    presence_penalty: np.ndarray  # float
    seed: np.ndarray  # uint64
    step: np.ndarray  # int, tokens generated so far


def apply_penalties_and_bias(
    logits: np.ndarray,
    params: BatchParams,
    counts: np.ndarray | None,
    bias: np.ndarray | None,
) -> np.ndarray:
    """Returns float64 logits with penalties (from generated-token `counts` [B, V]) and `bias` [B, V]."""
    out = logits.astype(np.float64, copy=True)
    if counts is not None:
        rows = np.flatnonzero((params.frequency_penalty != 0) | (params.presence_penalty != 0))
        if rows.size:
            c = counts[rows]
            out[rows] -= params.frequency_penalty[rows, None] * c + params.presence_penalty[rows, None] * (c > 0)
    if bias is not None:
        out += bias
    return out


def sample(
    logits: np.ndarray,
    params: BatchParams,
    counts: np.ndarray | None = None,
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """Returns the next token id for every row of `logits` [B, V]."""
    if counts is None and bias is None and not (params.temperature > 0).any():
        return np.argmax(logits, axis=1)  # all greedy: float32 argmax picks the same tokens
    adjusted = apply_penalties_and_bias(logits, params, counts, bias)
    tokens = np.argmax(adjusted, axis=1)
    rows = np.flatnonzero(params.temperature > 0)
    if rows.size == 0:
        return tokens
    u = uniforms(params.seed[rows], params.step[rows])
    tokens[rows] = _sample_rows(
        adjusted[rows] / params.temperature[rows, None],
        params.top_k[rows],
        params.top_p[rows],
        u,
    )
    return tokens


def _sample_rows(scaled: np.ndarray, top_k: np.ndarray, top_p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Samples one token per row of temperature-scaled logits by inverse CDF."""
    b, vocab = scaled.shape
    weights = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    tokens = np.empty(b, dtype=np.int64)

    # Unrestricted rows: inverse CDF over the whole vocabulary, in token-id order.
    free = (top_k <= 0) | (top_k >= vocab)
    free &= top_p >= 1.0
    fr = np.flatnonzero(free)
    if fr.size:
        cdf = np.cumsum(weights[fr], axis=1)
        target = u[fr] * cdf[:, -1]
        tokens[fr] = np.minimum((cdf < target[:, None]).sum(axis=1), vocab - 1)

    restricted = np.flatnonzero(~free)
    if restricted.size == 0:
        return tokens
    idx, w = candidates(weights[restricted], top_k[restricted], top_p[restricted])
    cdf = np.cumsum(w, axis=1)
    target = u[restricted] * cdf[:, -1]
    pick = np.minimum((cdf < target[:, None]).sum(axis=1), w.shape[1] - 1)
    tokens[restricted] = idx[np.arange(restricted.size), pick]
    return tokens


def candidates(weights: np.ndarray, top_k: np.ndarray, top_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (token ids, unnormalised weights) kept by top-k then top-p, most likely first.

    Rows are padded with weight 0. Looks at the `_CANDIDATES` most likely tokens
    first and sorts a row's whole vocabulary only when its kept set may be larger.
    """
    b, vocab = weights.shape
    k = np.where((top_k <= 0) | (top_k > vocab), vocab, top_k)
    finite_k = k[k < vocab]
    m = min(vocab, max(_CANDIDATES, int(finite_k.max()) if finite_k.size else 0))
    total = weights.sum(axis=1)
    if m < vocab:
        part = np.argpartition(-weights, m - 1, axis=1)[:, :m]
    else:
        part = np.broadcast_to(np.arange(vocab), (b, vocab))
    part_w = np.take_along_axis(weights, part, axis=1)
    order = np.argsort(-part_w, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    w = np.take_along_axis(part_w, order, axis=1)

    # A row needs its full vocabulary when top_k reaches past the candidates, or when
    # the candidates' mass (within the top-k set) does not reach top_p.
    k_mass = np.where(k <= m, np.cumsum(w, axis=1)[np.arange(b), np.minimum(k, m) - 1], total)
    full = (k > m) | (w.sum(axis=1) < top_p * k_mass * (1 - 1e-12))
    if m < vocab and full.any():
        width = vocab
        idx_full = np.zeros((b, width), dtype=np.int64)
        w_full = np.zeros((b, width), dtype=weights.dtype)
        idx_full[:, :m], w_full[:, :m] = idx, w
        for r in np.flatnonzero(full):  # rare: very flat distributions with top_p near 1
            o = np.argsort(-weights[r], kind="stable")
            idx_full[r], w_full[r] = o, weights[r, o]
        idx, w = idx_full, w_full

    width = w.shape[1]
    pos = np.arange(width)[None, :]
    w = np.where(pos < k[:, None], w, 0.0)
    mass = w.sum(axis=1, keepdims=True)
    before = np.cumsum(w, axis=1) - w  # mass strictly before each position
    w = np.where(before < top_p[:, None] * mass * (1 - 1e-12), w, 0.0)
    return idx, w
