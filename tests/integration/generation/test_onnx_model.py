"""OnnxCausalLM against the real converted model (needs `make models`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from generation.onnx_model import OnnxCausalLM, default_model_dir
from generation.tokenizer import Tokenizer

pytestmark = pytest.mark.model

MODEL_DIR = Path(os.environ.get("GUARDMESH_MODEL_DIR") or default_model_dir())
N_NEW = 12
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a land far away, there lived a",
    "1, 2, 3,",
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    if not (MODEL_DIR / "model.onnx").is_file():
        pytest.skip(f"no converted model at {MODEL_DIR} (run `make models`)")
    return Tokenizer(MODEL_DIR)


@pytest.fixture(scope="module")
def lm(tok: Tokenizer) -> OnnxCausalLM:
    return OnnxCausalLM(MODEL_DIR, intra_op_threads=2, max_batch=6, max_len=256)


def greedy_alone(lm: OnnxCausalLM, ids: list[int], slot: int = 0, n: int = N_NEW) -> list[int]:
    lm.release(slot)
    out = [int(lm.prefill(slot, ids).argmax())]
    for _ in range(n - 1):
        out.append(int(lm.decode([slot], [out[-1]])[0].argmax()))
    lm.release(slot)
    return out


@pytest.fixture(scope="module")
def reference(lm: OnnxCausalLM, tok: Tokenizer) -> list[list[int]]:
    return [greedy_alone(lm, tok.encode(p)) for p in PROMPTS]


def test_shapes_and_metadata(lm: OnnxCausalLM, tok: Tokenizer) -> None:
    assert lm.vocab_size == tok.vocab_size == 49152
    assert (lm.max_batch, lm.max_len) == (6, 256)
    logits = lm.prefill(0, tok.encode("Hello"))
    assert logits.shape == (lm.vocab_size,) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    assert lm.length(0) == len(tok.encode("Hello"))
    lm.prefill(1, tok.encode("Hi there"))
    step = lm.decode([1, 0], [5, 6])
    assert step.shape == (2, lm.vocab_size) and step.dtype == np.float32
    lm.release_all()
    assert lm.length(0) == lm.length(1) == 0


def test_greedy_paris(reference: list[list[int]], tok: Tokenizer) -> None:
    assert "Paris" in tok.decode(reference[0])


def test_batched_decode_matches_single(lm: OnnxCausalLM, tok: Tokenizer, reference: list[list[int]]) -> None:
    """All prompts (different lengths) in one batch, token for token equal to alone."""
    lm.release_all()
    outs = [[int(lm.prefill(s, tok.encode(p)).argmax())] for s, p in enumerate(PROMPTS)]
    slots = list(range(len(PROMPTS)))
    for _ in range(N_NEW - 1):
        logits = lm.decode(slots, [o[-1] for o in outs])
        for o, row in zip(outs, logits, strict=True):
            o.append(int(row.argmax()))
    lm.release_all()
    assert outs == reference


def test_continuous_batching_with_gaps_and_slot_reuse(
    lm: OnnxCausalLM, tok: Tokenizer, reference: list[list[int]]
) -> None:
    """Sequences join and leave mid-flight; a released slot is reused for a new prompt;
    empty rows and active-but-skipped rows inside the decoded range, and unordered slot
    lists, must not disturb anyone."""
    lm.release_all()
    ids = [tok.encode(p) for p in PROMPTS]
    # slot -> (prompt index, generated tokens)
    active: dict[int, tuple[int, list[int]]] = {}
    done: dict[int, list[int]] = {}

    def join(slot: int, p: int) -> None:
        assert slot not in active and lm.length(slot) == 0
        active[slot] = (p, [int(lm.prefill(slot, ids[p]).argmax())])

    join(4, 2)  # slots 0, 2, 3 stay idle inside the decoded range
    join(1, 0)
    step = 0
    while active:
        if step == 3:
            join(3, 1)  # joins mid-flight
        slots = sorted(active, reverse=step % 2 == 1)  # order must not matter
        if step in (5, 6):
            # An active slot that sits out a step, inside the decoded row range [1, 4].
            assert sorted(active) == [1, 3, 4]
            slots.remove(3)
        logits = lm.decode(slots, [active[s][1][-1] for s in slots])
        for s, row in zip(slots, logits, strict=True):
            active[s][1].append(int(row.argmax()))
        for s in [s for s, (_, out) in active.items() if len(out) == N_NEW]:
            p, out = active.pop(s)
            done[p] = out
            lm.release(s)
            if s == 1 and 3 not in done and 3 not in {q for q, _ in active.values()}:
                join(1, 3)  # reuse the slot just released
        step += 1
    assert done == {i: reference[i] for i in range(4)}


def test_chunked_prefill_is_deterministic_and_agrees(lm: OnnxCausalLM, tok: Tokenizer) -> None:
    ids = tok.encode(PROMPTS[2] * 3)
    whole = lm.prefill(0, ids)
    lm.release(0)
    old = lm.prefill_chunk
    try:
        lm.prefill_chunk = 8
        chunked = lm.prefill(0, ids)
        lm.release(0)
        again = lm.prefill(0, ids)
        lm.release(0)
    finally:
        lm.prefill_chunk = old
    np.testing.assert_array_equal(chunked, again)
    assert int(chunked.argmax()) == int(whole.argmax())


def test_errors(lm: OnnxCausalLM) -> None:
    lm.release_all()
    with pytest.raises(ValueError):
        lm.decode([0], [1])  # empty slot
    with pytest.raises(IndexError):
        lm.prefill(lm.max_batch, [1])
    with pytest.raises(ValueError):
        lm.prefill(0, [1] * (lm.max_len + 1))
    lm.prefill(0, [1, 2])
    with pytest.raises(ValueError):
        lm.decode([0, 0], [1, 1])
    lm.release_all()
