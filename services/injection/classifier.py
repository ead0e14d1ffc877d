"""Injection domain logic: NanoGuard (16.8M-param bidirectional transformer) on ONNX Runtime.

The model reads `[BOS] + tokens`, right-padded with PAD to exactly 512 positions: its
attention does not mask padding (only the mean-pooling does), so it was trained and is
run with that fixed length; any other padding changes its probabilities. Texts longer
than 511 tokens are scored in overlapping windows and the highest probability wins, so
an attack at the end of a long prompt is not cut off. Batching therefore costs no
accuracy: a text's probability does not depend on its batch neighbours.

`OnnxInjectionModel` is the only part that touches the model files; it loads in the
service's warm-up. `InjectionClassifier` validates requests, windows the texts and
batches windows across concurrent requests.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from common.batcher import MicroBatcher


class InvalidInput(ValueError):
    """The caller sent something the service refuses (mapped to INVALID_ARGUMENT)."""


class ModelMissing(RuntimeError):
    """The converted model is not there (run `make models`)."""


def windows(tokens: Sequence[int], *, bos: int, length: int, stride: int) -> list[list[int]]:
    """`[bos] + tokens` in rows of <= `length`; starts `stride` apart, last one flush."""
    body = length - 1
    if body <= 0 or stride <= 0:
        raise ValueError("length must be >= 2 and stride >= 1")
    if len(tokens) <= body:
        return [[bos, *tokens]]
    last = len(tokens) - body
    starts = list(range(0, last, min(stride, body)))
    starts.append(last)
    return [[bos, *tokens[s : s + body]] for s in starts]


def pad_rows(rows: Sequence[Sequence[int]], *, length: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads rows: (input_ids int64 [B, length], attention_mask bool [B, length])."""
    ids = np.full((len(rows), length), pad, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=bool)
    for i, row in enumerate(rows):
        if len(row) > length:
            raise ValueError(f"row of {len(row)} tokens > {length}")
        ids[i, : len(row)] = row
        mask[i, : len(row)] = True
    return ids, mask


def max_by_owner(scores: Sequence[float], owners: Sequence[int], n: int) -> list[float]:
    """Per text, the highest score among its windows."""
    out = [0.0] * n
    for score, owner in zip(scores, owners, strict=True):
        out[owner] = max(out[owner], float(score))
    return out


def check_texts(texts: Sequence[str], *, max_texts: int, max_text_chars: int) -> None:
    if not texts:
        raise InvalidInput("texts must not be empty")
    if len(texts) > max_texts:
        raise InvalidInput(f"too many texts: {len(texts)} > {max_texts}")
    for i, text in enumerate(texts):
        if len(text) > max_text_chars:
            raise InvalidInput(f"texts[{i}] is too long: {len(text)} > {max_text_chars} characters")


class InjectionModel(Protocol):
    """Tokenises into model rows and scores rows (probability of injection per row)."""

    def rows(self, text: str) -> list[list[int]]: ...

    def score_rows(self, rows: list[list[int]]) -> list[float]: ...


class OnnxInjectionModel:
    """The converted NanoGuard: model[.int8].onnx + tokenizer.tiktoken/.json (no download)."""

    FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}

    def __init__(
        self,
        model_dir: Path,
        *,
        precision: str = "int8",
        intra_op_threads: int = 2,
        window_stride: int = 384,
        chunk: int | None = None,
    ):
        if precision not in self.FILES:
            raise ValueError(f"precision must be one of {sorted(self.FILES)}")
        self._dir = Path(model_dir)
        self._file = self.FILES[precision]
        self._threads = intra_op_threads
        self._stride = window_stride
        # Rows per onnxruntime call. int8 quantises activations with one scale per call, so
        # batched rows would shift each other's scores slightly (~3e-4): one row per call
        # keeps a text's score independent of its neighbours (and costs nothing: every row
        # is a full 512-position pass, batching gains ~nothing on CPU).
        self._chunk = chunk or (1 if precision == "int8" else 16)
        self.precision = precision
        self._session = None
        self._enc = None

    @property
    def provenance(self) -> dict:
        return json.loads((self._dir / "provenance.json").read_text())

    def check_files(self) -> None:
        """ModelMissing unless the converted model is complete (cheap; no loading)."""
        for name in (self._file, "tokenizer.json", "tokenizer.tiktoken", "provenance.json"):
            if not (self._dir / name).is_file():
                raise ModelMissing(f"no {name} in {self._dir}: run `make models`")

    def load(self) -> None:
        import onnxruntime as ort
        import tiktoken

        self.check_files()
        meta = json.loads((self._dir / "tokenizer.json").read_text())
        ranks: dict[bytes, int] = {}
        for line in (self._dir / "tokenizer.tiktoken").read_text().splitlines():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        self._enc = tiktoken.Encoding(
            meta["name"],
            pat_str=meta["pat_str"],
            mergeable_ranks=ranks,
            special_tokens=meta["special_tokens"],
        )
        self._bos, self._pad = int(meta["bos_token_id"]), int(meta["pad_token_id"])
        self._length = int(meta["sequence_length"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        # No busy-waiting between calls: the CPU is shared with the other services.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(self._dir / self._file), options, providers=["CPUExecutionProvider"])
        self.score_rows(self.rows("warm-up"))

    @property
    def sequence_length(self) -> int:
        return self._length

    def rows(self, text: str) -> list[list[int]]:
        if self._enc is None:
            raise RuntimeError("OnnxInjectionModel.load() was not called")
        return windows(self._enc.encode_ordinary(text), bos=self._bos, length=self._length, stride=self._stride)

    def score_rows(self, rows: list[list[int]]) -> list[float]:
        if self._session is None:
            raise RuntimeError("OnnxInjectionModel.load() was not called")
        out: list[float] = []
        for i in range(0, len(rows), self._chunk):
            ids, mask = pad_rows(rows[i : i + self._chunk], length=self._length, pad=self._pad)
            probs = self._session.run(["probabilities"], {"input_ids": ids, "attention_mask": mask})[0]
            out.extend(float(p) for p in np.clip(probs[:, 1], 0.0, 1.0))
        return out


class InjectionClassifier:
    """The service's domain interface: one injection probability per text."""

    def __init__(
        self,
        model: InjectionModel,
        *,
        max_texts: int = 64,
        max_text_chars: int = 20_000,
        max_batch: int = 2,
        max_wait_s: float = 0.0,
    ):
        self._model = model
        self._max_texts = max_texts
        self._max_text_chars = max_text_chars
        self._batcher: MicroBatcher[list[int], float] = MicroBatcher(
            "injection", model.score_rows, max_batch, max_wait_s
        )

    def close(self) -> None:
        self._batcher.close()

    async def classify(self, texts: Sequence[str]) -> list[float]:
        texts = list(texts)
        check_texts(texts, max_texts=self._max_texts, max_text_chars=self._max_text_chars)
        rows: list[list[int]] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            text_rows = self._model.rows(text)
            rows.extend(text_rows)
            owners.extend([i] * len(text_rows))
        scores = await self._batcher.submit(rows)
        return max_by_owner(scores, owners, len(texts))
