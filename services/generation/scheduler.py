"""Continuous batching: one thread drives every active sequence of the model.

Each iteration prefills waiting prompts into free KV-cache slots, in chunks and up
to a token budget (so a long prompt never stalls the running sequences for more
than one chunk), then advances every decoding sequence by one token in a single
batched decode step. Finished or cancelled sequences leave at once and their slot
is reused by the next request.
"""

import itertools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import structlog
from prometheus_client import Counter, Histogram

from generation.sampler import BatchParams, sample

log = structlog.get_logger()

TOKENS = Counter("generation_tokens_total", "Tokens generated (sampled), all sequences")
FINISHED = Counter("generation_sequences_finished_total", "Sequences that left their slot", ["reason"])
DECODE_BATCH = Histogram(
    "generation_decode_batch_size", "Sequences advanced per decode step", buckets=(1, 2, 4, 8, 16, 32, 64)
)


class LanguageModel(Protocol):
    """What the scheduler needs from a model runner (see onnx_model.OnnxCausalLM)."""

    vocab_size: int
    max_batch: int
    max_len: int

    def prefill(self, slot: int, token_ids: list[int]) -> np.ndarray: ...
    def decode(self, slots: list[int], last_tokens: list[int]) -> np.ndarray: ...
    def release(self, slot: int) -> None: ...


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence picks its tokens (validated by the caller)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int = 0


class Overloaded(Exception):
    """The waiting queue is full; the caller should retry later."""


# Called from the scheduler thread with (token id or None, finish reason or None).
# finish reasons: "stop" (EOS), "length" (max_tokens or context full), "cancelled", "error".
TokenSink = Callable[[int | None, str | None], None]


@dataclass(eq=False)
class Sequence:
    """One choice being generated."""

    prompt_ids: list[int]
    max_tokens: int
    params: SamplingParams
    sink: TokenSink
    id: int = 0
    slot: int = -1
    chunks: list[list[int]] = field(default_factory=list)  # prompt chunks not yet prefilled
    generated: int = 0
    last_token: int = 0
    cancelled: bool = False


class Scheduler:
    """Owns the model; everything that touches it runs on the scheduler thread."""

    def __init__(self, model: LanguageModel, eos_token_ids: set[int], max_waiting: int = 256, prefill_chunk: int = 256):
        self._model = model
        self._prefill_chunk = prefill_chunk
        self._prefilling: list[Sequence] = []  # admitted, prompt not fully prefilled yet
        self._eos = set(eos_token_ids)
        self._waiting: queue.Queue[Sequence] = queue.Queue(maxsize=max_waiting)
        self._ids = itertools.count(1)
        self._slots: list[Sequence | None] = [None] * model.max_batch
        b, v = model.max_batch, model.vocab_size
        self._temperature = np.zeros(b)
        self._top_k = np.zeros(b, dtype=np.int64)
        self._top_p = np.ones(b)
        self._frequency_penalty = np.zeros(b)
        self._presence_penalty = np.zeros(b)
        self._seed = np.zeros(b, dtype=np.uint64)
        self._step = np.zeros(b, dtype=np.int64)
        self._counts = np.zeros((b, v), dtype=np.float32)
        self._bias = np.zeros((b, v), dtype=np.float32)
        self._has_bias = np.zeros(b, dtype=bool)
        self._running = False
        self._thread: threading.Thread | None = None
        self.draining = False  # set on shutdown: new sequences are refused
        self.steps = 0  # decode steps run, for metrics

    @property
    def active(self) -> int:
        """Sequences holding a slot (generating) right now."""
        return sum(s is not None for s in self._slots)

    @property
    def waiting(self) -> int:
        return self._waiting.qsize()

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=5)

    def submit(self, prompt_ids: list[int], max_tokens: int, params: SamplingParams, sink: TokenSink) -> Sequence:
        """Queues a sequence; its tokens arrive through `sink`. Thread-safe."""
        if self.draining:
            raise Overloaded("generation service is shutting down")
        seq = Sequence(prompt_ids, max_tokens, params, sink, id=next(self._ids))
        try:
            self._waiting.put_nowait(seq)
        except queue.Full:
            raise Overloaded("generation queue is full") from None
        return seq

    @staticmethod
    def cancel(seq: Sequence) -> None:
        """Marks a sequence cancelled; the scheduler frees its slot before the next step. Thread-safe."""
        seq.cancelled = True

    # --- scheduler thread -------------------------------------------------------------

    def _run(self) -> None:
        while self._running:
            try:
                self._admit()
                if self.active > len(self._prefilling):
                    self._decode_step()
            except Exception:  # never let one bad step kill the thread: fail what was running
                log.exception("scheduler step failed")
                self._prefilling.clear()
                for seq in self._slots:
                    if seq is not None:
                        self._finish(seq, "error")

    def _admit(self) -> None:
        """Prefills prompt chunks, about `prefill_chunk` tokens per iteration in all.

        Blocks briefly for new work only when nothing is running. Chunks of one prompt are
        equal-sized and fixed at admission, so a prompt is prefilled the same way whatever
        else is running (same numerics, same greedy text).
        """
        budget = self._prefill_chunk
        while budget > 0:
            if not self._prefilling:
                if not self._take_waiting():
                    return
                if not self._prefilling:  # it took one cancelled while waiting: look again
                    continue
            seq = self._prefilling[0]
            if seq.cancelled:
                self._prefilling.pop(0)
                self._finish(seq, "cancelled")
                continue
            chunk = seq.chunks.pop(0)
            logits = self._model.prefill(seq.slot, chunk)
            budget -= len(chunk)
            if not seq.chunks:
                self._prefilling.pop(0)
                self._advance([seq], logits[None, :])

    def _take_waiting(self) -> bool:
        """Moves one waiting sequence into a free slot; False when there is none."""
        free = [i for i, s in enumerate(self._slots) if s is None]
        if not free:
            return False
        try:
            seq = self._waiting.get(timeout=0.05) if self.active == 0 else self._waiting.get_nowait()
        except queue.Empty:
            return False
        if seq.cancelled:
            seq.sink(None, "cancelled")
            return True
        slot = free[0]
        seq.slot = slot
        self._slots[slot] = seq
        p = seq.params
        self._temperature[slot] = p.temperature
        self._top_k[slot] = p.top_k
        self._top_p[slot] = p.top_p
        self._frequency_penalty[slot] = p.frequency_penalty
        self._presence_penalty[slot] = p.presence_penalty
        self._seed[slot] = np.uint64(p.seed % (1 << 64))
        self._step[slot] = 0
        self._counts[slot] = 0
        if p.logit_bias:
            ids = np.fromiter(p.logit_bias.keys(), dtype=np.int64)
            self._bias[slot, ids] = np.fromiter(p.logit_bias.values(), dtype=np.float32)
            self._has_bias[slot] = True
        n_chunks = -(-len(seq.prompt_ids) // self._prefill_chunk)
        seq.chunks = [c.tolist() for c in np.array_split(np.asarray(seq.prompt_ids), n_chunks)]
        self._prefilling.append(seq)
        return True

    def _decode_step(self) -> None:
        prefilling = set(map(id, self._prefilling))
        for seq in self._slots:
            if seq is not None and seq.cancelled and id(seq) not in prefilling:
                self._finish(seq, "cancelled")
        running = [s for s in self._slots if s is not None and id(s) not in prefilling]
        if not running:
            return
        logits = self._model.decode([s.slot for s in running], [s.last_token for s in running])
        self.steps += 1
        DECODE_BATCH.observe(len(running))
        self._advance(running, logits)

    def _advance(self, seqs: list[Sequence], logits: np.ndarray) -> None:
        """Samples one token for each sequence from its logits row and emits or finishes it."""
        rows = np.array([s.slot for s in seqs])
        params = BatchParams(
            temperature=self._temperature[rows],
            top_k=self._top_k[rows],
            top_p=self._top_p[rows],
            frequency_penalty=self._frequency_penalty[rows],
            presence_penalty=self._presence_penalty[rows],
            seed=self._seed[rows],
            step=self._step[rows],
        )
        penalised = np.any((params.frequency_penalty != 0) | (params.presence_penalty != 0))
        tokens = sample(
            logits,
            params,
            counts=self._counts[rows] if penalised else None,
            bias=self._bias[rows] if self._has_bias[rows].any() else None,
        )
        self._counts[rows, tokens] += 1
        self._step[rows] += 1
        TOKENS.inc(len(seqs))
        for seq, token in zip(seqs, tokens.tolist(), strict=True):
            if token in self._eos:
                self._finish(seq, "stop")
                continue
            seq.generated += 1
            seq.last_token = token
            full = len(seq.prompt_ids) + seq.generated >= self._model.max_len
            if seq.generated >= seq.max_tokens or full:
                seq.sink(token, None)
                self._finish(seq, "length")
            else:
                seq.sink(token, None)

    def _finish(self, seq: Sequence, reason: str) -> None:
        FINISHED.labels(reason).inc()
        slot = seq.slot
        if slot >= 0 and self._slots[slot] is seq:
            self._slots[slot] = None
            self._model.release(slot)
            if self._has_bias[slot]:
                self._bias[slot] = 0
                self._has_bias[slot] = False
        seq.sink(None, reason)
