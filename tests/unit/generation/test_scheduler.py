"""Continuous batching against a fake model whose next token is fixed per slot state."""

import threading
import time

import numpy as np

from generation.scheduler import SamplingParams, Scheduler

VOCAB = 50
EOS = 0


class CountingModel:
    """Next token = (last token + 1) % VOCAB, skipping EOS unless the prompt asked for it."""

    vocab_size = VOCAB

    def __init__(self, max_batch=4, max_len=64):
        self.max_batch, self.max_len = max_batch, max_len
        self.last = {}
        self.decode_batches: list[list[int]] = []
        self.lock = threading.Lock()

    def _logits(self, token):
        row = np.zeros(VOCAB, dtype=np.float32)
        row[(token + 1) % VOCAB or 1] = 10.0
        return row

    def prefill(self, slot, ids):
        self.last[slot] = ids[-1]
        return self._logits(ids[-1])

    def decode(self, slots, last_tokens):
        with self.lock:
            self.decode_batches.append(list(slots))
        return np.stack([self._logits(t) for t in last_tokens])

    def release(self, slot):
        self.last.pop(slot, None)


class Collector:
    def __init__(self):
        self.tokens, self.finish, self.done = [], None, threading.Event()

    def __call__(self, token, finish):
        if token is not None:
            self.tokens.append(token)
        if finish is not None:
            self.finish = finish
            self.done.set()


GREEDY = SamplingParams(temperature=0.0)


def run_scheduler(model, eos=(EOS,)):
    s = Scheduler(model, set(eos))
    s.start()
    return s


def test_max_tokens_and_length_finish():
    s = run_scheduler(CountingModel())
    c = Collector()
    s.submit([5], 4, GREEDY, c)
    assert c.done.wait(5)
    s.stop()
    assert (c.tokens, c.finish) == ([6, 7, 8, 9], "length")


def test_eos_finishes_with_stop_and_is_not_emitted():
    s = run_scheduler(CountingModel(), eos=(8,))
    c = Collector()
    s.submit([5], 10, GREEDY, c)
    assert c.done.wait(5)
    s.stop()
    assert (c.tokens, c.finish) == ([6, 7], "stop")


def test_sequences_share_decode_steps_and_slots_are_reused():
    model = CountingModel(max_batch=2)
    s = run_scheduler(model)
    collectors = [Collector() for _ in range(5)]
    for i, c in enumerate(collectors):
        s.submit([10 * i + 1], 5, GREEDY, c)
    assert all(c.done.wait(5) for c in collectors)
    s.stop()
    assert [c.tokens for c in collectors] == [[10 * i + 2 + k for k in range(5)] for i in range(5)]
    assert any(len(batch) == 2 for batch in model.decode_batches)  # batched together
    assert max(len(batch) for batch in model.decode_batches) <= 2  # never more than the slots
    assert s.active == 0


def test_cancel_frees_the_slot_for_waiting_requests():
    model = CountingModel(max_batch=1, max_len=10_000)
    s = run_scheduler(model)
    long, short = Collector(), Collector()
    seq = s.submit([1], 5000, GREEDY, long)
    s.submit([1], 3, GREEDY, short)
    time.sleep(0.05)
    s.cancel(seq)
    assert long.done.wait(5) and long.finish == "cancelled"
    assert short.done.wait(5) and short.tokens == [2, 3, 4]
    s.stop()
    assert s.active == 0


def test_context_window_bounds_generation():
    s = run_scheduler(CountingModel(max_len=6))
    c = Collector()
    s.submit([1, 2, 3], 100, GREEDY, c)
    assert c.done.wait(5)
    s.stop()
    assert len(c.tokens) == 3 and c.finish == "length"
