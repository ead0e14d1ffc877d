"""Run-time tokenizer for the converted model (HF `tokenizers` only; no transformers).

We serve raw completions: text is encoded as-is, without a chat template and without
added special tokens.

`IncrementalDetokenizer` turns a growing list of generated token ids into text deltas for
streaming. Byte-level BPE tokens can end in the middle of a multi-byte UTF-8 character;
decoding such a prefix yields U+FFFD, so a delta ending in U+FFFD is held back until the
following tokens complete the character (or the stream ends).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

REPLACEMENT_CHAR = "\ufffd"

DecodeFn = Callable[[Sequence[int]], str]


class IncrementalDetokenizer:
    """Streams text for a growing token sequence.

    Decoding each token on its own is wrong for two reasons: a multi-byte character may
    span tokens, and some decoders (e.g. SentencePiece-style leading spaces) depend on the
    preceding token. So each step decodes a short window that starts a few tokens back
    (`prefix_offset`) and emits only what was added beyond the already-emitted part
    (`read_offset`) — the approach used by HF text-generation-inference and vLLM.

    Usage:
        detok = IncrementalDetokenizer(tokenizer.decode)
        for tok in generated:
            text += detok.add(tok)
        text += detok.finish()
    """

    def __init__(self, decode: DecodeFn, prompt_ids: Sequence[int] = ()) -> None:
        """`decode` maps token ids to text (special tokens should already be skipped by it).
        `prompt_ids` optionally seeds the context so the first generated token decodes with
        its left neighbour (nothing from the prompt itself is emitted)."""
        self._decode = decode
        self._ids: list[int] = list(prompt_ids[-6:]) if prompt_ids else []
        self._prefix_offset = 0  # window start used as decoding context
        self._read_offset = len(self._ids)  # ids before this are already emitted

    @property
    def pending(self) -> bool:
        """True when some tokens are held back (an incomplete character)."""
        return self._read_offset < len(self._ids)

    def add(self, token_id: int) -> str:
        """Append one token; return the newly completed text (possibly '')."""
        self._ids.append(int(token_id))
        return self._step(final=False)

    def add_many(self, token_ids: Sequence[int]) -> str:
        self._ids.extend(int(t) for t in token_ids)
        return self._step(final=False)

    def finish(self) -> str:
        """End of stream: return any held-back text, even if it ends in U+FFFD (the
        model really produced an invalid/incomplete byte sequence)."""
        return self._step(final=True)

    def _step(self, final: bool) -> str:
        if self._read_offset >= len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if not final and new_text.endswith(REPLACEMENT_CHAR):
            return ""  # incomplete UTF-8 tail: wait for the next token(s)
        # Slice at the common prefix rather than at len(prefix_text): if the seed prompt
        # ended inside a character, prefix_text ends in U+FFFD where new_text has the
        # completed character.
        delta = new_text[_common_prefix_len(prefix_text, new_text) :]
        if not delta and not final:
            # Nothing visible yet (e.g. a token that decodes to ''); keep the window.
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        # Keep the buffer short: only the context window is ever decoded again.
        if self._prefix_offset > 64:
            drop = self._prefix_offset
            self._ids = self._ids[drop:]
            self._prefix_offset -= drop
            self._read_offset -= drop
        return delta


class Tokenizer:
    """Encode/decode for a converted model dir (tokenizer.json + model_info.json)."""

    def __init__(self, model_dir: str | os.PathLike[str]) -> None:
        self.model_dir = Path(model_dir)
        path = self.model_dir / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (run `make models`)")
        self._tok = _HFTokenizer.from_file(str(path))
        # We never want the post-processor's special tokens or padding/truncation.
        self._tok.no_padding()
        self._tok.no_truncation()

        info = _read_json(self.model_dir / "model_info.json")
        tok_cfg = _read_json(self.model_dir / "tokenizer_config.json")
        eos: set[int] = {int(i) for i in info.get("eos_token_ids", [])}
        if not eos and tok_cfg.get("eos_token"):
            tid = self._tok.token_to_id(tok_cfg["eos_token"])
            if tid is not None:
                eos.add(tid)
        self.eos_token_ids: frozenset[int] = frozenset(eos)
        bos = info.get("bos_token_id")
        self.bos_token_id: int | None = int(bos) if bos is not None else None
        self.vocab_size: int = int(info.get("vocab_size") or self._tok.get_vocab_size())
        ctx = info.get("max_position_embeddings") or tok_cfg.get("model_max_length")
        self.max_context: int | None = int(ctx) if ctx else None

    def encode(self, text: str) -> list[int]:
        """Plain encoding for raw completion: no chat template, no special tokens added."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def is_eos(self, token_id: int) -> bool:
        return token_id in self.eos_token_ids

    def detokenizer(self, prompt_ids: Sequence[int] = ()) -> IncrementalDetokenizer:
        """A fresh streaming detokenizer (skips special tokens)."""
        return IncrementalDetokenizer(self.decode, prompt_ids)


def _common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    i = 0
    while a[i] == b[i]:
        i += 1
    return i


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    with path.open() as f:
        return json.load(f)
