"""IncrementalDetokenizer with a tiny fake byte tokenizer (no model needed), plus the real
tokenizer.json when a converted model exists."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from generation.tokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer, Tokenizer

# Fake vocabulary: ids 0..255 are single bytes (like byte-level BPE fallbacks), 256+ are
# multi-byte tokens, and SPECIAL decodes to nothing (a skipped special token).
MULTI = {256: b"hello", 257: b" wor", 258: b"ld", 259: "é".encode()}
SPECIAL = 999


def fake_decode(ids: Sequence[int]) -> str:
    data = b"".join(b"" if i == SPECIAL else MULTI[i] if i in MULTI else bytes([i]) for i in ids)
    return data.decode("utf-8", errors="replace")


def byte_ids(text: str) -> list[int]:
    return list(text.encode())


def stream(ids: Sequence[int], prompt: Sequence[int] = ()) -> list[str]:
    detok = IncrementalDetokenizer(fake_decode, prompt)
    deltas = [detok.add(i) for i in ids]
    deltas.append(detok.finish())
    return deltas


def test_ascii_tokens_stream_one_by_one() -> None:
    deltas = stream([256, 257, 258])
    assert deltas == ["hello", " wor", "ld", ""]


@pytest.mark.parametrize("text", ["é", "日本語", "a🙂b", "naïve café 🎉🎉"])
def test_multibyte_chars_split_across_tokens_are_held_until_complete(text: str) -> None:
    deltas = stream(byte_ids(text))
    assert "".join(deltas) == text
    assert all(REPLACEMENT_CHAR not in d for d in deltas)


def test_emoji_is_emitted_exactly_when_its_last_byte_arrives() -> None:
    ids = byte_ids("🙂")  # 4 bytes
    detok = IncrementalDetokenizer(fake_decode)
    assert [detok.add(i) for i in ids[:3]] == ["", "", ""]
    assert detok.pending
    assert detok.add(ids[3]) == "🙂"
    assert not detok.pending


def test_mixed_multibyte_and_multi_char_tokens() -> None:
    ids = [256, *byte_ids(" 日"), 259, 257, 258]
    assert "".join(stream(ids)) == "hello 日é world"


def test_special_tokens_that_decode_to_nothing() -> None:
    deltas = stream([256, SPECIAL, 258])
    assert "".join(deltas) == "hellold"


def test_incomplete_tail_is_flushed_on_finish() -> None:
    ids = [256, *byte_ids("é")[:1]]  # stream ends inside a character
    detok = IncrementalDetokenizer(fake_decode)
    assert detok.add(ids[0]) == "hello"
    assert detok.add(ids[1]) == ""
    assert detok.finish() == REPLACEMENT_CHAR
    assert detok.finish() == ""


def test_prompt_context_is_not_emitted() -> None:
    deltas = stream([257, 258], prompt=[256])
    assert "".join(deltas) == " world"


def test_prompt_ending_inside_a_character() -> None:
    e = byte_ids("é")
    deltas = stream([e[1], 258], prompt=[256, e[0]])
    assert deltas == ["é", "ld", ""]


def test_long_stream_keeps_window_bounded() -> None:
    text = "ab日🙂" * 200
    detok = IncrementalDetokenizer(fake_decode)
    out = "".join(detok.add(i) for i in byte_ids(text)) + detok.finish()
    assert out == text
    assert len(detok._ids) < 200  # noqa: SLF001 - the buffer is trimmed


# --------------------------------------------------------------------- real tokenizer

MODEL_DIR = Path(
    os.environ.get("GUARDMESH_MODEL_DIR") or Path.home() / ".cache/guardmesh/models/smollm2-135m-instruct-int8"
)


@pytest.fixture(scope="module")
def real_tokenizer() -> Tokenizer:
    if not (MODEL_DIR / "tokenizer.json").is_file():
        pytest.skip(f"no converted model at {MODEL_DIR} (run `make models`)")
    return Tokenizer(MODEL_DIR)


@pytest.mark.model
def test_real_roundtrip_and_metadata(real_tokenizer: Tokenizer) -> None:
    text = "The capital of France is Paris. Ünïcödé 日本語 🙂"
    ids = real_tokenizer.encode(text)
    assert real_tokenizer.decode(ids) == text
    assert real_tokenizer.vocab_size == 49152
    assert real_tokenizer.eos_token_ids >= {2}  # <|im_end|>; <|endoftext|> (0) too
    assert real_tokenizer.token_to_id("<|endoftext|>") in real_tokenizer.eos_token_ids
    assert real_tokenizer.max_context == 8192
    # No special tokens are added for raw completion.
    assert real_tokenizer.encode("hi")[0] not in real_tokenizer.eos_token_ids | {1}


@pytest.mark.model
@pytest.mark.parametrize("text", ["Hello, world!", "naïve café 日本語 🙂🎉 ok", "  spaced\n\tout  "])
def test_real_incremental_matches_full_decode(real_tokenizer: Tokenizer, text: str) -> None:
    ids = real_tokenizer.encode(text)
    detok = real_tokenizer.detokenizer()
    deltas = [detok.add(i) for i in ids] + [detok.finish()]
    assert "".join(deltas) == real_tokenizer.decode(ids) == text
    assert all(REPLACEMENT_CHAR not in d for d in deltas)
